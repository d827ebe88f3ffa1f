"""``python -m pydesk.agent --instance-dir DIR``: the per-VM host agent (see pydesk.agent.main)."""

from pydesk.agent.main import main

raise SystemExit(main())
