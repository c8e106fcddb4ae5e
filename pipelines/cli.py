"""The ``privfreq`` command: one subcommand per pipeline module, each exposing ``run(argv)``.

``privfreq SUBCOMMAND [flags] [beam runner flags]``; ``privfreq SUBCOMMAND --help`` for the flags.
A subcommand's module is imported only when it runs, so ``privfreq encode`` (numpy, no Beam) never
imports Beam.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> (module with run(argv), one-line description)
SUBCOMMANDS = {
    "plan": ("privfreq.pipelines.plan", "advise a protocol for k, epsilon, n and budgets (or rank MSS moduli)"),
    "config": ("privfreq.pipelines.config", "write a collection config JSON (MSS: planner's moduli)"),
    "encode": ("privfreq.pipelines.encode", "randomize items (CSV/Parquet) into a report file (no Beam)"),
    "budget": ("privfreq.pipelines.budget", "distribution of ε spent per user of an encode --state file"),
    "aggregate": ("privfreq.pipelines.aggregate", "Beam job: report files -> estimates, summary, plot"),
    "simulate": ("privfreq.pipelines.simulate", "Beam job: synthetic reports -> estimates, MSE, plot"),
    "query": ("privfreq.pipelines.query", "estimate and stderr per candidate name from sketch totals (hcms, cms)"),
    "audit": ("privfreq.pipelines.audit", "lower-bound ε empirically from randomizer samples (privacy audit)"),
    "evaluate": ("privfreq.pipelines.evaluate", "Beam job: protocols × k × ε × distributions grid -> MSE, bits, time, ASR report"),
    "demo": ("privfreq.pipelines.demo", "plan, simulate, encode and aggregate MSS end to end"),
}


def parser() -> argparse.ArgumentParser:
    """The top-level parser: a subparser per subcommand, whose flags its module's ``run`` parses
    (so ``privfreq SUBCOMMAND --help`` is the module's own help)."""
    ap = argparse.ArgumentParser(prog="privfreq", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
    for name, (_, desc) in SUBCOMMANDS.items():
        sub.add_parser(name, help=desc, description=desc, add_help=False)
    return ap


def main(argv=None) -> int:
    """Run a subcommand. As the console script (``argv=None``) a configuration ``ValueError``
    prints one line and exits 2; called with an argv list, errors propagate to the caller."""
    interactive = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = parser()
    if argv[:1] in ([], ["-h"], ["--help"]):
        ap.print_help()
        return 0 if argv else 2
    try:
        args, rest = ap.parse_known_args(argv[:1])
    except SystemExit as e:  # unknown subcommand: argparse printed the usage and the error
        return int(e.code or 0)
    rest += argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    module = importlib.import_module(SUBCOMMANDS[args.subcommand][0])
    try:
        module.run(rest)
    except ValueError as e:  # configuration errors: a clear message, no traceback
        if not interactive:
            raise
        print(f"privfreq {args.subcommand}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
