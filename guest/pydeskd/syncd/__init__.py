"""The guest side of bind-mount sync: one ``python3 -m pydeskd.syncd ROOT`` process per host root.

What it is for: the host agent runs it over an SSH exec channel and speaks the framed protocol on
its stdin/stdout (``server``); it keeps ROOT (under /var/lib/pydesk/sync/, on the data disk) equal
to the host's tree and reports what containers change there (``inotify``).
What it must never do: depend on anything beyond the standard library (it must start fast, in
any guest), or make decisions about conflicts: the host holds the agreed state and decides.
"""
