"""The network layer's files under ``<data-root>/network/``.

What it is for: ``networks/<id>.json`` (one per network) and ``attachments/<cid>.json`` (one per
container: its wishes and what its running task holds). Every write is atomic (tmp, fsync,
rename), so after a crash (kill -9 included) each file is the old or the new version, never a
mix; the addresses in use are read back from the attachments, so none is lost or doubled.

What it must never do: decide anything (the service does), or be used without the service's
lock (it keeps an in-memory copy that the files mirror).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from pydeskd.network.model import Attachment, Network
from pydeskd.shim.paths import atomic_write

log = logging.getLogger(__name__)


class NetworkStore:
    def __init__(self, root: Path, durable: bool = True) -> None:
        self.root = root
        self.durable = durable
        self.networks_dir = root / "networks"
        self.attachments_dir = root / "attachments"
        for d in (self.networks_dir, self.attachments_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.networks: dict[str, Network] = {}
        self.attachments: dict[str, Attachment] = {}
        self._load()

    def _load(self) -> None:
        for path in sorted(self.networks_dir.glob("*.json")):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                net = Network.from_json(json.loads(path.read_text()))
                self.networks[net.id] = net
                continue
            log.warning("ignoring an unreadable network file %s", path)
        for path in sorted(self.attachments_dir.glob("*.json")):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                att = Attachment.from_json(json.loads(path.read_text()))
                self.attachments[att.cid] = att
                continue
            log.warning("ignoring an unreadable attachment file %s", path)

    # --- networks -----------------------------------------------------------------------

    def put_network(self, net: Network) -> None:
        atomic_write(self.networks_dir / f"{net.id}.json", net.to_json(), durable=self.durable)
        self.networks[net.id] = net

    def delete_network(self, net_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.networks_dir / f"{net_id}.json")
        self.networks.pop(net_id, None)

    # --- attachments --------------------------------------------------------------------

    def put_attachment(self, att: Attachment) -> None:
        atomic_write(self.attachments_dir / f"{att.cid}.json", att.to_json(),
                     durable=self.durable)
        self.attachments[att.cid] = att

    def delete_attachment(self, cid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.attachments_dir / f"{cid}.json")
        self.attachments.pop(cid, None)

    def addresses_in_use(self, net_id: str, but: str = "") -> set[str]:
        """Every address an active endpoint holds on ``net_id``, plus the static ``--ip`` of
        containers that are not running (Docker keeps those for them); container ``but``'s
        own are left out."""
        out: set[str] = set()
        for att in self.attachments.values():
            if att.cid == but:
                continue
            if att.active is not None:
                out |= {e.address for e in att.active.endpoints if e.network_id == net_id}
            cfg = att.config(net_id)
            if cfg is not None and cfg.ipv4:
                out.add(cfg.ipv4)
        return out
