"""``list`` and ``ps``: what runs under a --root, rendered as runc renders it.

Read-only: never changes a container, its state or its cgroup.
"""

from __future__ import annotations

import json
import os
import subprocess

from pydeskd.runtime import state as st
from pydeskd.runtime.errors import RuntimeFailure


def list_command(root: str, fmt: str, quiet: bool) -> str:
    rows = []
    for container_id in st.list_ids(root):
        try:
            data = st.load(root, container_id)
        except RuntimeFailure:
            continue
        row = st.oci_state(data, st.status(data))
        row["owner"] = _owner(root, container_id)  # runc's list names it; state does not
        rows.append(row)
    if quiet:
        return "".join(f"{r['id']}\n" for r in rows)
    if fmt == "json":
        # runc prints null, not [], when there is no container.
        return json.dumps(rows or None, separators=(",", ":")) + "\n"
    if fmt != "table":
        raise RuntimeFailure(f"invalid format option {fmt!r}: use table or json")
    table = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    table += [(r["id"], str(r["pid"]), r["status"], r["bundle"], r["created"], r["owner"])
              for r in rows]
    # runc's tabwriter: each column as wide as its widest cell plus 3, and at least 12.
    widths = [max(12, max(len(row[i]) for row in table) + 3) for i in range(len(table[0]))]
    return "".join("".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=False))
                   + row[-1] + "\n" for row in table)


def _owner(root: str, container_id: str) -> str:
    uid = os.stat(st.container_dir(root, container_id)).st_uid
    return "root" if uid == 0 else str(uid)


def container_pids(root: str, container_id: str) -> list[int]:
    from pydeskd.runtime.cgroups import restore_cgroup

    data = st.load(root, container_id)
    if not data.get("cgroup"):
        return []  # a create that had not made it yet
    return sorted(restore_cgroup(data["cgroup"]).pids())


def ps_command(root: str, container_id: str, fmt: str, ps_args: list[str]) -> str:
    pids = container_pids(root, container_id)
    if fmt == "json":
        return json.dumps(pids) + "\n"
    if fmt != "table":
        raise RuntimeFailure(f"invalid format option {fmt!r}: use table or json")
    proc = subprocess.run(["ps", *(ps_args or ["-ef"])], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeFailure(f"ps {' '.join(ps_args)}: {proc.stderr.strip()}")
    lines = proc.stdout.splitlines()
    if not lines:
        return ""
    header = lines[0].split()
    if "PID" not in header:
        raise RuntimeFailure("ps output has no PID column")
    column = header.index("PID")
    wanted = set(pids)
    out = [lines[0]]
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > column and fields[column].isdigit() and int(fields[column]) in wanted:
            out.append(line)
    return "\n".join(out) + "\n"
