"""The ``archangel`` command (also ``python -m archangel``).

Sub-commands parse arguments and call into the library; no logic of their
own beyond turning errors into messages and exit codes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import demo

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="archangel",
        description="An asyncio process manager: run, inspect and signal services.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_demo = sub.add_parser(
        "demo", help="run the demo service on 127.0.0.1", description=demo.__doc__
    )
    p_demo.add_argument("--port", type=int, default=8888, help="echo port (default 8888; 0: any)")
    p_demo.add_argument(
        "--interval", type=float, default=5.0, help="seconds between ps printouts (default 5)"
    )
    p_demo.add_argument(
        "--seconds", type=float, default=None, help="stop by itself after this long"
    )
    p_demo.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop (default uvloop)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``archangel`` command line; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "demo":
        return demo.run(
            port=args.port, interval=args.interval, seconds=args.seconds, loop=args.loop
        )
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse guarantees one


if __name__ == "__main__":
    sys.exit(main())
