"""The ``odeformer`` command. Subcommands import their heavy modules lazily."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class UsageError(Exception):
    """Bad usage or an unreadable input: exit code 2 with a one-line message."""


def _cmd_generate(args: argparse.Namespace) -> int:
    from odeformer.grammar import Grammar, GrammarError, default_grammar

    try:
        grammar = Grammar.from_file(args.grammar) if args.grammar else default_grammar()
    except GrammarError as e:
        raise UsageError(f"bad grammar: {e}") from None
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out}: output directory exists and is not empty")
    if args.n < 1 or args.workers < 1 or args.shard_size < 1:
        raise UsageError("--n, --workers and --shard-size must be >= 1")
    from data_gen.generate import generate_to_dir

    report = generate_to_dir(grammar, args.n, out, workers=args.workers, seed=args.seed,
                             shard_size=args.shard_size, progress=not args.quiet)
    print(report.summary())
    print(f"wrote {len(report.shards)} shard(s) and manifest.json to {out}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from odeformer import train

    try:
        cfg = train.load_config(args.preset, args.set)
    except ValueError as e:
        raise UsageError(str(e)) from None
    for key in ("out", "init", "grammar", "data"):
        if getattr(args, key):
            cfg[key] = getattr(args, key)
    if not cfg["out"]:
        raise UsageError("--out is required")
    train.train(cfg)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="odeformer", description="Symbolic regression of ODEs from trajectories.")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate random ODE systems and their trajectories into shards")
    g.add_argument("--grammar", help="grammar TOML file (default: the packaged default grammar)")
    g.add_argument("--n", type=int, required=True, help="number of systems to write")
    g.add_argument("--out", required=True, help="output directory (created; must be empty)")
    g.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--shard-size", type=int, default=10_000, help="systems per shard file")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=_cmd_generate)
    from odeformer.train import build_parser as train_parser

    tr = sub.add_parser("train", help="train or fine-tune a model on generated data")
    train_parser(tr)
    tr.set_defaults(func=_cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on bad usage already
        return int(e.code or 0)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"odeformer {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
