"""The host's ignore rules, applied in the guest: what the guest side neither scans, watches
nor reports.

What it is for: a container writing into an ignored directory (``node_modules/``, ``build/``)
must not cost a watch per directory and a report per file in the guest. The host compiles its
rules (``pydesk.sync.ignore``: VCS folders, ``.pydeskignore``, a file bind's one name) and sends
them in ``hello`` as regular expressions; :class:`Matcher` applies them with the same algorithm
(a unit test runs both on the same paths). The host still filters what it receives.
What it must never do: parse ``.pydeskignore`` itself (one parser, on the host).
"""

from __future__ import annotations

import re
from typing import Any

from pydeskd.syncd.fstree import TEMP_PREFIX


class Matcher:
    def __init__(self, wired: dict[str, Any] | None = None) -> None:
        wired = wired or {}
        self.pruned = frozenset(str(n) for n in wired.get("pruned", ()))
        only = wired.get("only")
        self.only = str(only) if only is not None else None
        self.rules = [(re.compile(str(pattern)), bool(negate), bool(dir_only))
                      for pattern, negate, dir_only in wired.get("rules", ())]

    def ignored(self, rel: str, is_dir: bool) -> bool:
        """True when ``rel`` or one of its parent directories is ignored."""
        parts = rel.split("/")
        if self.only is not None and parts[0] != self.only:
            return True
        for i, name in enumerate(parts):
            if name in self.pruned or name.startswith(TEMP_PREFIX):
                return True
            last = i == len(parts) - 1
            if self.rules and self._match("/".join(parts[:i + 1]), is_dir or not last):
                return True
        return False

    def _match(self, rel: str, is_dir: bool) -> bool:
        result = False
        for regex, negate, dir_only in self.rules:
            if dir_only and not is_dir:
                continue
            if regex.match(rel):
                result = not negate
        return result
