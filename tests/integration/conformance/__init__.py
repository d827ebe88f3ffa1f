"""The runtime conformance suite: pydesk-runc held to the behaviour of Debian's runc.

Every test runs the same bundle (busybox-static rootfs, `runc spec`-like config edited as
data) under each runtime of `tests.support.runtimes.RUNTIMES`, and asserts the expected
observable value, not merely "same as runc". Tests are first made green against runc, which
proves them right; they are never loosened to fit pydesk-runc.

    .venv/bin/python -m pytest tests/integration/conformance              # both runtimes
    .venv/bin/python -m pytest tests/integration/conformance -k pydesk    # pydesk-runc only

Needs root. Each test cleans up everything it made (containers, processes, cgroup directories
and their parents, mounts, network namespaces, files), also when it fails.
"""
