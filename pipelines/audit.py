"""Empirical privacy audit: a lower bound on ε from randomizer samples (protocols/audit.py).

    privfreq audit --protocol grr --k 16 --epsilon 1 [--samples 200000] [--confidence 0.95]
    privfreq audit --protocol mss --k 30 --epsilon 2 --moduli 5,7,8 --seed 1 --output audit.json
    privfreq audit --protocol lgrr --k 8 --epsilon 0.8 --param epsilon_perm=2 --stage permanent
    privfreq audit --protocol rsfd --attributes a:3,b:2,c:4 --epsilon 1 --x0 0,0,0 --x1 2,1,3

Longitudinal protocols: --stage report (default) audits one report against ε (ε1), --stage
permanent the memoized round-1 response against epsilon_perm (ε∞). Multi-attribute protocols
(``--attributes``) take tuples, ``--x0 v1,v2,...`` (default all 0 and all 1), audited against the
tuple-level ε (RS+FD: ε′).

Samples the randomizer on the pair of inputs (--x0, --x1), chooses a likelihood-ratio event on half
of the samples and bounds ε with Clopper–Pearson on the other half. With probability at least
--confidence the printed bound is <= the protocol's true ε; a bound above the configured ε means
the randomizer leaks more than it claims (exit status 1).
"""
from __future__ import annotations

import argparse
import json
import logging

import numpy as np

from privfreq.pipelines import common
from privfreq.pipelines.config import add_protocol_args, build_config
from privfreq.protocols.audit import STAGES, audit


def _parse_input(text: str | None, default: int, d: int, flag: str):
    """An item (``d`` = 0) or a tuple of ``d`` values from ``v`` / ``v1,v2,...``."""
    if text is None:
        return [default] * d if d else default
    try:
        values = [int(v) for v in str(text).split(",")]
    except ValueError:
        raise ValueError(f"audit: {flag} must be an integer or comma-separated integers, got "
                         f"{text!r}") from None
    if not d:
        if len(values) != 1:
            raise ValueError(f"audit: {flag} must be one item for {flag[2:]} of a "
                             f"one-attribute protocol, got {text!r}")
        return values[0]
    return values


def run(argv=None, save_main_session=True):
    parser = argparse.ArgumentParser(prog="privfreq audit", description=__doc__.split("\n")[0])
    add_protocol_args(parser)
    parser.add_argument("--samples", type=int, default=200_000, help="reports per input")
    parser.add_argument("--confidence", type=float, default=0.95, help="in (0, 1)")
    parser.add_argument("--x0", default=None,
                        help="first input item, or tuple v1,v2,... (default 0 / all 0)")
    parser.add_argument("--x1", default=None,
                        help="second input item, or tuple v1,v2,... (default 1 / all 1)")
    parser.add_argument("--seed", type=int, default=None,
                        help="RNG seed for reproducible audits (default: OS entropy)")
    parser.add_argument("--stage", choices=STAGES, default="report",
                        help="longitudinal protocols: one report (vs ε) or the permanent round "
                             "(vs epsilon_perm)")
    parser.add_argument("--output", default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    config = build_config(args)
    proto = config.protocol
    d = proto.d if getattr(proto, "multi_attribute", False) else 0
    x0 = _parse_input(args.x0, 0, d, "--x0")
    x1 = _parse_input(args.x1, 1, d, "--x1")
    result = audit(proto, samples=args.samples, confidence=args.confidence,
                   x0=x0, x1=x1, rng=np.random.default_rng(args.seed), stage=args.stage)
    out = {**result.to_dict(), "config": {**config.to_dict(), "fingerprint": config.fingerprint},
           "exceeds_configured_epsilon": result.epsilon_lower_bound > result.epsilon}
    text = json.dumps(out, indent=2, sort_keys=True)
    if args.output:
        common.write_text_atomic(args.output, text + "\n")  # never a half-written file
    print(f"audit {config.protocol_id} k={config.protocol.k} ({result.stage}, {x0} vs {x1}): ε >= "
          f"{result.epsilon_lower_bound:.4f} at confidence {result.confidence:g} "
          f"(configured ε = {result.epsilon:g}; {result.samples} samples per input)")
    if out["exceeds_configured_epsilon"]:
        raise SystemExit(f"audit: lower bound {result.epsilon_lower_bound:.4f} exceeds the "
                         f"configured ε = {result.epsilon:g}: the randomizer leaks more than claimed")
    return result


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
