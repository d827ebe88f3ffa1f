"""A stand-in for the host's resolver, on 127.0.0.1 (or the address and port given): answers
every name with 192.0.2.1 (or what ``answers`` says), over UDP and TCP. It can answer UDP
truncated, stay silent, or answer with a wrong id first, and it records what it was asked."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

from pydeskd.network import dns_wire as w


class FakeUpstream:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.answers: dict[str, list[str]] = {}
        self.truncate_udp = False
        self.silent = False
        self.wrong_id_first = False
        self.closing = False
        self.udp_questions: list[tuple[int, str]] = []
        self.tcp_questions: list[tuple[int, str]] = []
        self.udp, self.tcp = self._bind_pair(host, port)
        self.port = self.udp.getsockname()[1]
        self._threads = [threading.Thread(target=self._serve_udp, daemon=True),
                         threading.Thread(target=self._serve_tcp, daemon=True)]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
        """UDP and TCP on one port (a resolver's address has no port for each)."""
        for _ in range(100):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((host, port))
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((host, udp.getsockname()[1]))
            except OSError:  # that port is taken for TCP: another pair
                udp.close()
                tcp.close()
                continue
            tcp.listen(16)
            return udp, tcp
        raise OSError("no free port for both UDP and TCP")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def close(self) -> None:
        self.closing = True
        for sock in (self.udp, self.tcp):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(5)

    def _answer(self, data: bytes, max_size: int) -> bytes:
        query = w.parse_query(data)
        addresses = self.answers.get(query.question.name, ["192.0.2.1"])
        return w.build_response(query, w.RCode.NOERROR, addresses, authoritative=False,
                                ttl=30, max_size=max_size)

    def _serve_udp(self) -> None:
        while True:
            try:
                data, peer = self.udp.recvfrom(65535)
            except OSError:
                return
            if self.closing:  # shutdown() woke the recvfrom
                return
            query = w.parse_query(data)
            self.udp_questions.append((query.header.id, query.question.name))
            if self.silent:
                continue
            if self.wrong_id_first:
                self.udp.sendto(w.with_id(self._answer(data, 512), query.header.id ^ 1), peer)
            self.udp.sendto(self._answer(data, 512 if self.truncate_udp else 65535), peer)

    def _serve_tcp(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn:
                length = struct.unpack("!H", conn.recv(2))[0]
                data = b""
                while len(data) < length:
                    data += conn.recv(length - len(data))
                query = w.parse_query(data)
                self.tcp_questions.append((query.header.id, query.question.name))
                answer = self._answer(data, 65535)
                conn.sendall(struct.pack("!H", len(answer)) + answer)
