"""Which paths of a synced root are not synced: VCS folders, ``.pydeskignore``, file-bind filters,
pydesk's own directory.

What it is for: :class:`IgnoreRules` answers ``ignored(rel, is_dir)`` for the host scan, the host
watcher and the guest's reports alike (an ignored path is not synced in either direction, and is
never deleted on either side because of the other). ``.pydeskignore`` at the root holds
gitignore-like lines: ``#`` comments, ``*.log`` (any depth), ``build/`` (directories only),
``/top`` or ``a/b`` (anchored to the root), ``**`` across directories, ``!keep.log`` (re-include;
as in git, not inside an ignored directory). It is read when the session starts.
What it must never do: touch the filesystem beyond reading ``.pydeskignore``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pydeskd.syncd.fstree import TEMP_PREFIX

ALWAYS_PRUNED = (".git", ".hg", ".svn")
"""Directory names never synced (the guest prunes them from its scan and its watches too,
like every other ignored path: the rules go to the guest in ``hello``)."""

IGNORE_FILE = ".pydeskignore"


@dataclass(frozen=True)
class Rule:
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool


def _glob_to_regex(glob: str) -> str:
    out = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = glob.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = glob[i + 1:end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def parse_rule(line: str) -> Rule | None:
    line = line.rstrip("\n").rstrip()
    if not line or line.startswith("#"):
        return None
    negate = line.startswith("!")
    if negate:
        line = line[1:]
    dir_only = line.endswith("/")
    line = line.rstrip("/")
    if not line:
        return None
    anchored = "/" in line
    line = line.lstrip("/")
    body = _glob_to_regex(line)
    pattern = f"^{body}$" if anchored else f"^(?:.*/)?{body}$"
    return Rule(re.compile(pattern), negate, dir_only)


@dataclass(frozen=True)
class IgnoreRules:
    rules: tuple[Rule, ...] = ()
    only: str | None = None
    """A single-file bind: the one top-level name synced (everything else is ignored)."""
    pruned: tuple[str, ...] = field(default=ALWAYS_PRUNED)

    @classmethod
    def from_lines(cls, lines: list[str], only: str | None = None) -> IgnoreRules:
        return cls(tuple(r for r in map(parse_rule, lines) if r is not None), only)

    @classmethod
    def load(cls, root: Path, only: str | None = None) -> IgnoreRules:
        try:
            text = (root / IGNORE_FILE).read_text(errors="replace")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            text = ""
        return cls.from_lines(text.splitlines(), only)

    def excluding(self, rels: tuple[str, ...]) -> IgnoreRules:
        """These rules plus ``rels`` (paths relative to the root, with everything below them),
        after the user's: a ``!`` line of ``.pydeskignore`` cannot re-include them."""
        extra = tuple(Rule(re.compile(f"^{re.escape(rel)}$"), False, False) for rel in rels)
        return IgnoreRules(self.rules + extra, self.only, self.pruned)

    def wire(self) -> dict[str, object]:
        """The rules for the guest side (``pydeskd.syncd.ignore.Matcher``), compiled."""
        return {"pruned": list(self.pruned), "only": self.only,
                "rules": [[r.regex.pattern, r.negate, r.dir_only] for r in self.rules]}

    def ignored(self, rel: str, is_dir: bool) -> bool:
        """True when ``rel`` or one of its parent directories is ignored."""
        parts = rel.split("/")
        if self.only is not None and parts[0] != self.only:
            return True
        for i, name in enumerate(parts):
            if name in self.pruned or name.startswith(TEMP_PREFIX):
                return True
            last = i == len(parts) - 1
            if self._match("/".join(parts[:i + 1]), is_dir or not last):
                return True
        return False

    def _match(self, rel: str, is_dir: bool) -> bool:
        result = False
        for rule in self.rules:
            if rule.dir_only and not is_dir:
                continue
            if rule.regex.match(rel):
                result = not rule.negate
        return result
