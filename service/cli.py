"""The installed ``odeformer`` command: the library's subcommands plus ``serve`` (DESIGN.md 3.3)."""

from __future__ import annotations

import argparse
import sys

from odeformer import cli as core
from odeformer.cli import UsageError


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from odeformer import checkpoint as ckpt
    from service.app import create_app

    if args.checkpoint and not (ckpt.resolve(args.checkpoint) / "config.json").is_file():
        raise UsageError(f"--checkpoint {args.checkpoint}: not a checkpoint directory (no config.json)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    app = create_app(args.checkpoint, max_concurrency=args.concurrency, queue_bound=args.queue_bound,
                     max_body_bytes=args.max_body_bytes)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("serve", help="run the HTTP service (DESIGN.md 3.3)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--checkpoint", help="checkpoint directory (default: the default model)")
    s.add_argument("--concurrency", type=int, default=2, help="fits running at once")
    s.add_argument("--queue-bound", type=int, default=16, help="requests waiting beyond those; more get 503")
    s.add_argument("--max-body-bytes", type=int, default=4_000_000)
    s.set_defaults(func=_cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    """The library's parser with ``serve`` added."""
    return core.build_parser(_add_serve)


def main(argv: list[str] | None = None) -> int:
    return core.main(argv, parser=build_parser())


if __name__ == "__main__":
    sys.exit(main())
