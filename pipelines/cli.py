"""The ``privfreq`` command: one subcommand per pipeline module, each exposing ``run(argv)``.

``privfreq SUBCOMMAND [flags] [beam runner flags]``; ``privfreq SUBCOMMAND --help`` for the flags.
"""
from __future__ import annotations

import importlib
import logging
import sys

# subcommand -> (module with run(argv), one-line description)
SUBCOMMANDS = {
    "plan": ("privfreq.pipelines.plan", "rank MSS moduli for k and epsilon"),
    "config": ("privfreq.pipelines.config", "write a collection config JSON (MSS: planner's moduli)"),
    "encode": ("privfreq.pipelines.encode", "randomize items (CSV/Parquet) into a report Avro file"),
    "aggregate": ("privfreq.pipelines.aggregate", "Beam job: report Avro files -> estimates + summary"),
    "simulate": ("privfreq.pipelines.simulate", "Beam job: synthetic reports -> estimates, MSE, plot"),
    "audit": ("privfreq.pipelines.audit", "lower-bound ε empirically from randomizer samples (privacy audit)"),
    "evaluate": ("privfreq.pipelines.evaluate", "Beam job: protocols × k × ε × distributions grid -> MSE, bits, time, ASR report"),
}


def main(argv=None) -> int:
    """Run a subcommand. As the console script (``argv=None``) a configuration ``ValueError``
    prints one line and exits 2; called with an argv list, errors propagate to the caller."""
    interactive = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        width = max(map(len, SUBCOMMANDS), default=0)
        lines = [f"  {name:<{width}}  {desc}" for name, (_, desc) in SUBCOMMANDS.items()]
        print("usage: privfreq SUBCOMMAND [flags]\n\nsubcommands:\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nprivfreq: unknown subcommand {argv[0]!r}", file=sys.stderr)
            return 2
        return 0 if argv else 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    try:
        module.run(argv[1:])
    except ValueError as e:  # configuration errors: a clear message, no traceback
        if not interactive:
            raise
        print(f"privfreq {argv[0]}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
