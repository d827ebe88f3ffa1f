"""The real seam (urllib3): TLS certificates are verified by default (a self-signed registry is
refused with a clear error; it needs to be configured as insecure, which means plain http), and
connection failures read as short causes after the URL."""

from __future__ import annotations

import http.server
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydeskd.containerd.errors import Unavailable
from pydeskd.containerd.registry import Transport, Urllib3Backend


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[int]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_self_signed_certificate_is_refused(tls_server: int) -> None:
    transport = Transport(Urllib3Backend(), max_attempts=1)
    with pytest.raises(Unavailable) as e:
        transport.request("GET", f"https://127.0.0.1:{tls_server}/v2/")
    assert f"GET https://127.0.0.1:{tls_server}/v2/" in str(e.value)
    assert "certificate verify failed" in str(e.value).lower()



def test_connection_failures_read_clearly(tmp_path: Path) -> None:
    transport = Transport(Urllib3Backend(), max_attempts=1, timeout=0.3)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(Unavailable) as e:
        transport.request("GET", f"http://127.0.0.1:{port}/v2/x?_state=SECRET")
    assert str(e.value) == f"GET http://127.0.0.1:{port}/v2/x: connection refused"
    with socket.socket() as silent:  # accepts (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with pytest.raises(Unavailable) as e:
            transport.request("GET", f"http://127.0.0.1:{port}/v2/")
    assert str(e.value) == f"GET http://127.0.0.1:{port}/v2/: timeout"
