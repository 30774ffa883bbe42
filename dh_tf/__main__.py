"""Command line: ``python -m dh_tf demo [--rows N --heap 512m --epochs 3 ...]``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dh_tf", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    from dh_tf import demo

    demo.add_arguments(commands.add_parser("demo", help="train a Keras model on a Parquet table bigger than the heap"))
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
