"""The first sync's two guards against losing host files to a guest copy that is not what it was.

What it is for: the three-way plan (``plan.initial_plan``) reads "the guest lacks a path that
both sides had agreed on" as "deleted in the guest", and "the guest's version differs" as
"edited in the guest". That holds only for the very copy the agreed state was saved with, as new
as then. :func:`trusted_base` checks the copy's identity (``pydeskd.syncd.identity``: a random
id and the generation it made durable before the host saved): another copy (removed and made
again, a new data disk) or an older one (writes the guest acknowledged but lost) gets an empty
base, i.e. a merge: nothing is deleted on either side, and a path that differs is a conflict
(both versions kept). :func:`spare_host_deletions` is the last line: a first sync that would
still delete many host paths (more than ``MASS_DELETE_MIN`` and more than
``MASS_DELETE_FRACTION`` of the host's entries) deletes none of them and sends them back to
the guest instead.
What it must never do: touch the filesystem or the network (pure, unit-tested), or turn a
deletion into anything but keeping the host's version.
"""

from __future__ import annotations

from pydesk.sync.plan import Plan
from pydesk.sync.state import Saved
from pydeskd.syncd.fstree import Entry

MASS_DELETE_MIN = 50
MASS_DELETE_FRACTION = 0.2


def trusted_base(saved: Saved, copy_id: str, gen: int) -> dict[str, Entry]:
    """The agreed entries if they were agreed with this guest copy (same id, its generation at
    least the saved one), else none (a merge)."""
    if saved.copy_id and saved.copy_id == copy_id and gen >= saved.gen:
        return saved.entries
    return {}


def spare_host_deletions(plan: Plan, host_entries: int) -> list[Entry]:
    """Cancels the plan's host deletions when they are too many (returns them, else []): each
    is pushed to the guest instead (it lacks them), so the host keeps every file."""
    doomed = plan.delete_host
    if len(doomed) <= MASS_DELETE_MIN or len(doomed) <= MASS_DELETE_FRACTION * host_entries:
        return []
    plan.delete_host = []
    # Path order puts a directory before what it holds (a prefix sorts first).
    plan.push = sorted([*plan.push, *doomed], key=lambda e: e.path)
    return doomed
