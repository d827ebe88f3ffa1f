"""Host agent: one background process per VM; boots it, runs proxy, forwarder and sync, and
writes its status as JSON lines that the CLI follows."""
