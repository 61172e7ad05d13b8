"""The ``odeformer`` command: generate, train, fit. Subcommands import their heavy modules lazily.

``serve`` belongs to the web layer above this package (``service/cli.py``), which adds it to this parser;
the installed ``odeformer`` script is ``service.cli:main``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


class UsageError(Exception):
    """Bad usage or an unreadable input: exit code 2 with a one-line message."""


def _cmd_generate(args: argparse.Namespace) -> int:
    from data_gen.grammar import Grammar, GrammarError, default_grammar

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
        cfg = train.config_from_args(args)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not cfg["out"]:
        raise UsageError("--out is required")
    train.train(cfg)
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    from odeformer import batch

    if args.output and Path(args.output).suffix not in (".csv", ".jsonl"):
        raise UsageError(f"-o {args.output}: the output must end in .csv or .jsonl")
    if args.output and not Path(args.output).resolve().parent.is_dir():
        raise UsageError(f"-o {args.output}: no such directory")
    for name in ("beam_size", "top_k", "workers"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
    if not args.time_budget > 0:
        raise UsageError("--time-budget must be > 0")
    if args.resume and not args.output:
        raise UsageError("--resume needs -o: it continues the run that was writing that file")
    use_ray = args.ray or args.ray_address is not None
    if use_ray:
        from odeformer import distributed

        if not distributed.available():
            raise UsageError("--ray needs Ray: pip install 'odeformer-service[ray]'")
    try:
        files = batch.scan_inputs(args.inputs)  # each file read and parsed once, then dropped
    except batch.InputFileError as e:
        raise UsageError(str(e)) from None
    from odeformer import checkpoint as ckpt

    checkpoint = args.checkpoint or str(ckpt.default_path())
    try:
        model = ckpt.load(checkpoint)
    except ckpt.CheckpointError as e:
        raise UsageError(str(e)) from None
    allowed = [op.strip() for op in args.allowed_operators.split(",")] if args.allowed_operators else None
    if allowed is not None:
        unknown = set(allowed) - model.grammar.output_operators
        if unknown:
            raise UsageError(f"--allowed-operators: unknown {sorted(unknown)} "
                             f"(this model knows {', '.join(sorted(model.grammar.output_operators))})")
    if not 0 < args.temperature <= 10:
        raise UsageError("--temperature must be in (0, 10]")
    options = {"checkpoint": checkpoint, "beam_size": args.beam_size, "top_k": args.top_k,
               "time_budget_s": args.time_budget, "allowed_operators": allowed, "decoding": args.decoding,
               "temperature": args.temperature}
    options |= _experiment_options(args, files)
    identity = {"weights": model.config.get("weights")}  # a resumed run must use the same model
    del model
    from odeformer.batch import table
    from odeformer.distributed import ClusterError

    journal: list = []  # receives the run's open journal
    try:
        done = batch.run(files, options, args.output, identity=identity, workers=args.workers, use_ray=use_ray,
                         ray_address=args.ray_address, resume=args.resume, progress=not args.quiet,
                         journal=journal)
        print(table(done.results))
    except (batch.InputFileError, batch.JournalError, ClusterError) as e:
        raise UsageError(str(e)) from None
    except KeyboardInterrupt:
        if journal and journal[0].path.exists():
            j = journal[0]
            print(f"{len(j.offsets)} of {sum(len(f.systems) for f in files)} system(s) are saved in {j.path}; "
                  "run the same command with --resume to fit only the others", file=sys.stderr)
        raise
    finally:
        for j in journal:
            j.close()
    if done.resumed:
        print(f"{done.resumed} system(s) taken from the interrupted run", file=sys.stderr)
    if done.failed:
        print(f"{done.failed} of {len(done.results)} system(s) failed", file=sys.stderr)
    return 1 if done.failed else 0


def _experiment_options(args: argparse.Namespace, files: list) -> dict:
    """The suggested-experiment options (docs/ambiguity.md), checked: bad bounds or durations are usage
    errors, and so is a bound on a variable that no input system has."""
    from odeformer.ambiguity import check_duration, parse_bounds
    from odeformer.validation import InputError

    if not args.suggest_experiment:
        if args.experiment_bounds or args.experiment_max_duration is not None:
            raise UsageError("--experiment-bounds and --experiment-max-duration need --suggest-experiment")
        return {}
    try:
        bounds = parse_bounds(args.experiment_bounds) if args.experiment_bounds else None
        longest = check_duration(args.experiment_max_duration, "--experiment-max-duration")
    except InputError as e:
        raise UsageError(str(e)) from None
    if bounds:
        known = {v for f in files for v in f.variables}
        unknown = sorted(set(bounds) - known)
        if unknown:
            raise UsageError(f"--experiment-bounds: no input system has the variable(s) {unknown}")
        bounds = {k: list(v) for k, v in bounds.items()}
    return {"experiment": True, "experiment_bounds": bounds, "experiment_max_duration": longest}


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The trainer's flags, defined here so that building the parser does not import torch."""
    p.add_argument("--preset", default="tiny", help="tiny, base, test, or a TOML file of config keys")
    p.add_argument("--out", help="checkpoint directory to write")
    p.add_argument("--init", help="checkpoint to continue from (weights, vocabulary, provenance)")
    p.add_argument("--grammar", help="grammar TOML file (default: the init checkpoint's, else the default grammar); "
                   "with --init, tokens the grammar adds extend the vocabulary")
    p.add_argument("--data", help="train on shards from `odeformer generate` instead of a live generator stream")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")


def build_parser(add_commands: Callable[[argparse._SubParsersAction], None] | None = None) -> argparse.ArgumentParser:
    """The parser; ``add_commands`` lets a front end above this package register its own subcommands."""
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

    f = sub.add_parser("fit", help="fit the systems in trajectory CSV files (DESIGN.md 3.1, 3.2)")
    f.add_argument("inputs", nargs="+", metavar="IN.csv")
    f.add_argument("-o", "--output", help="results file: .csv or .jsonl (default: only the table on stdout)")
    f.add_argument("--beam-size", type=int, default=16, help="beams (or samples, with --decoding sample) per group")
    f.add_argument("--decoding", choices=["beam", "sample"], default="beam",
                   help="beam search, or temperature sampling for more diverse proposals")
    f.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (--decoding sample)")
    f.add_argument("--top-k", type=int, default=5)
    f.add_argument("--time-budget", type=float, default=10.0, help="seconds per system")
    f.add_argument("--allowed-operators", help="comma-separated operators, e.g. add,mul,sin")
    f.add_argument("--checkpoint", help="checkpoint directory (default: the default model)")
    f.add_argument("--workers", type=int, help="processes fitting systems in parallel (default 1; with --ray: "
                   "one per CPU of the Ray cluster)")
    f.add_argument("--ray", action="store_true", help="fit on Ray: a local Ray on this machine, or the cluster "
                   "of --ray-address (pip install 'odeformer-service[ray]'; docs/ray.md)")
    f.add_argument("--ray-address", metavar="ADDRESS", help="join this Ray cluster ('auto', or HOST:PORT of its "
                   "head, 'ray://HOST:10001' for Ray Client); implies --ray")
    f.add_argument("--resume", action="store_true", help="keep the results an interrupted run with the same -o "
                   "and options saved (OUT.partial) and fit only the other systems")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.add_argument("--suggest-experiment", action="store_true", help="also suggest the initial state and "
                   "recording length that best separate the best candidate from its rivals (docs/ambiguity.md; "
                   "in the JSON lines output and the table)")
    f.add_argument("--experiment-bounds", metavar="NAME=LO:HI,...", help="where the suggested initial state may "
                   "lie, per variable, e.g. x=0:5,y=-1:2 (default: each variable's observed range widened by its "
                   "width on each side)")
    f.add_argument("--experiment-max-duration", type=float, metavar="T", help="the longest recording to suggest, "
                   "in the data's time units (default: twice the observed span)")
    f.set_defaults(func=_cmd_fit)

    tr = sub.add_parser("train", help="train or fine-tune a model on generated data")
    _add_train_arguments(tr)
    tr.set_defaults(func=_cmd_train)
    if add_commands is not None:
        add_commands(sub)
    return p


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Run the command line; front ends above this package pass a parser with their own subcommands."""
    parser = parser or build_parser()
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
