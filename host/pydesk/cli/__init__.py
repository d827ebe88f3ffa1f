"""The `pydesk` command line (Typer): one module per command group.

Thin by rule: parse arguments, call the library, render the result. No logic that a test would
have to drive through the CLI to reach.
"""
