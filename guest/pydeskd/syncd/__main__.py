"""``python3 -m pydeskd.syncd ROOT``: serve one sync session on stdin/stdout until EOF."""

from __future__ import annotations

import argparse
import sys

from pydeskd.syncd.server import Server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pydeskd.syncd",
                                     description="guest side of pydesk bind-mount sync")
    parser.add_argument("root", help="the guest copy of one host root")
    args = parser.parse_args(argv)
    return Server(args.root).run()


if __name__ == "__main__":
    sys.exit(main())
