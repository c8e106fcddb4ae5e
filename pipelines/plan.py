"""Advise which protocol to deploy for (k, ε, n) under budgets; or rank MSS moduli.

    privfreq plan --k 50000 --epsilon 2 [--n 10000000] [--max-bytes 1024]
                  [--max-server-seconds 60] [--objective mse|asr|bytes] [--delta 1] [--json]
    privfreq plan --k 1024 --epsilon 1 --protocol mss [--ell 2] [--max-mse-factor 1.2]
                  [--max-bits 12] [--objective mse|asr] [--json]

Advisor (default): every registered one-shot protocol (``protocols.advisor.advise``; MSS with the
planner's moduli, ASS/AUE/ALH/ATHE with their knob solved for the objective) ranked by the
objective, one line each: predicted MSE at n (and n·MSE), information bits, wire bytes per report,
closed-form ASR, client µs per report and server seconds for n reports (cost model fitted by
benchmarks/cost_model.py), privacy ("pure" or "computational"); what breaks a limit is listed last
with the limit and the factor. Computational-privacy protocols (seed-compressed) are listed as ruled
out unless ``--allow-computational``. ``--json`` prints the options as a JSON list.

Several attributes (``--attributes name:k,...`` instead of ``--k``; ``protocols.multidim.compare``):
SPL, SMP, RS+FD (each fake) and, with ``--epsilon-perm``, ALLOMFREE, one line each with the
per-attribute predicted MSE at n (uniform frequencies), the inner protocols, wire bytes, ε and the
tuple-level ε; RS+FD is listed at ε (tuple-level ε′ > ε) and at the ε whose ε′ equals ε.

MSS moduli (``--protocol mss``, or any of ``--ell``/``--max-mse-factor``/``--max-bits``): one line
per candidate (moduli, ℓ, bits per report, MSE ratio to SS on [k], predicted n·MSE, condition
number), best first; ``--objective asr`` ranks the candidates within (1+δ)× the best MSE by ASR.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math


def _finite(v):
    return v if not isinstance(v, float) or math.isfinite(v) else None


def _mss(args):
    from privfreq.protocols.planner import mss_asr, plan, plan_asr
    if args.objective == "asr":
        scored = plan_asr(args.k, args.epsilon, delta=args.delta, top=args.top, ell=args.ell,
                          max_bits=args.max_bits, seed=args.seed)
        candidates = [c for c, _ in scored]
    else:
        if args.objective == "bytes" and args.max_mse_factor is None:
            args.max_mse_factor = 1 + args.delta
        candidates = plan(args.k, args.epsilon, ell=args.ell, max_mse_factor=args.max_mse_factor,
                          max_bits=args.max_bits, seed=args.seed, top=args.top)
    rows = [{**dataclasses.asdict(c), "moduli": list(c.moduli),
             "asr": mss_asr(args.k, args.epsilon, c.moduli)} for c in candidates]
    if args.json:
        print(json.dumps([{k: _finite(v) for k, v in r.items()} for r in rows], indent=2))
    else:
        print(f"{'moduli':<24} {'ell':>3} {'bits':>7} {'MSE/SS':>7} {'n*MSE':>10} {'cond':>6} "
              f"{'ASR':>9}")
        for r in rows:
            print(f"{','.join(map(str, r['moduli'])):<24} {r['ell']:>3} {r['bits']:>7.2f} "
                  f"{r['mse_ratio_ss']:>7.3f} {r['predicted_mse_n1']:>10.4g} "
                  f"{r['condition_number']:>6.2f} {r['asr']:>9.3g}")
    return candidates


def _knob(o) -> str:
    extra = {k: v for k, v in o.params.items() if k not in ("k", "epsilon", "seed_bits")}
    if "moduli" not in extra and o.note.startswith("planner moduli"):
        extra["moduli"] = o.note.split("moduli ", 1)[1]
    return ",".join(f"{k}={round(v, 4) if isinstance(v, float) else v}"
                    for k, v in extra.items()) or "-"


def _advise(args):
    from privfreq.protocols.advisor import advise
    options = advise(args.k, args.epsilon, n=args.n, max_bytes=args.max_bytes,
                     max_server_seconds=args.max_server_seconds, objective=args.objective,
                     delta=args.delta, seed=args.seed,
                     allow_computational=args.allow_computational)
    if args.json:
        print(json.dumps([o.to_dict() for o in options], indent=2))
        return options
    print(f"k = {args.k}, ε = {args.epsilon}, n = {args.n:,}, objective = {args.objective}"
          + (f" (δ = {args.delta})" if args.objective == "asr" else "")
          + (f", max {args.max_bytes:g} bytes" if args.max_bytes else "")
          + (f", max {args.max_server_seconds:g} server s" if args.max_server_seconds else ""))
    print(f"{'#':>2} {'protocol':<8} {'knob':<26} {'MSE':>9} {'n*MSE':>8} {'bits':>8} "
          f"{'bytes':>8} {'ASR':>9} {'client us':>9} {'server s':>9} privacy")
    for i, o in enumerate(options, 1):
        rank = str(i) if o.feasible else "-"
        print(f"{rank:>2} {o.protocol_id:<8} {_knob(o)[:26]:<26} {o.mse:>9.3g} {o.mse_n1:>8.4g} "
              f"{o.information_bits:>8.5g} {o.wire_bytes:>8.5g} {o.asr:>9.3g} "
              f"{o.client_us:>9.3g} {o.server_s:>9.3g} {o.privacy}")
        for why in o.ruled_out:
            print(f"{'':>12}ruled out by {why}")
    return options


def _attributes(args):
    from privfreq.pipelines.config import parse_attributes
    from privfreq.protocols.multidim import compare
    names, domains = parse_attributes(args.attributes)
    rows = compare(names, domains, args.epsilon, args.n, args.epsilon_perm)
    if args.json:
        print(json.dumps(rows, indent=2))
        return rows
    print(f"attributes {', '.join(f'{a} (k={k})' for a, k in zip(names, domains))}; "
          f"ε = {args.epsilon}, n = {args.n:,}; per-attribute MSE at uniform frequencies")
    print(f"{'#':>2} {'protocol':<16} {'ε':>7} {'tuple ε':>8} {'bytes':>8}  "
          + " ".join(f"{a[:10]:>10}" for a in names) + "  inner")
    for i, r in enumerate(rows, 1):
        name = r["protocol"] + (f" {r['params']['fake']}" if "fake" in r["params"] else "")
        print(f"{i:>2} {name:<16} {r['epsilon']:>7.4g} {r['tuple_epsilon']:>8.4g} "
              f"{r['wire_bytes']:>8.5g}  " + " ".join(f"{m:>10.3g}" for m in r["attribute_mse"])
              + "  " + ",".join(r["inner"]))
    return rows


def run(argv=None, save_main_session=True):
    parser = argparse.ArgumentParser(prog="privfreq plan", description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=None, help="universe size")
    parser.add_argument("--attributes", default=None, metavar="NAME:K,...",
                        help="several attributes: compare the multi-attribute protocols")
    parser.add_argument("--epsilon-perm", type=float, default=None,
                        help="with --attributes: also ALLOMFREE with this ε∞ (ε is ε1)")
    parser.add_argument("--epsilon", type=float, required=True, help="privacy budget (> 0)")
    parser.add_argument("--protocol", default=None,
                        help="'mss': rank MSS moduli instead of protocols")
    parser.add_argument("--n", type=int, default=10**6, help="reports per collection (advisor)")
    parser.add_argument("--max-bytes", type=float, default=None,
                        help="largest wire payload per report (advisor)")
    parser.add_argument("--max-server-seconds", type=float, default=None,
                        help="largest predicted server time for n reports (advisor)")
    parser.add_argument("--objective", choices=("mse", "asr", "bytes"), default="mse",
                        help="rank by MSE, by ASR within (1+delta)x the best MSE, or by bytes")
    parser.add_argument("--delta", type=float, default=1.0,
                        help="asr objective: allowed MSE excess factor - 1 (default 1: 2x)")
    parser.add_argument("--allow-computational", action="store_true",
                        help="rank seed-compressed protocols (computational privacy) with the rest")
    parser.add_argument("--ell", type=int, default=None, help="MSS: number of moduli (default 2-4)")
    parser.add_argument("--max-mse-factor", type=float, default=None,
                        help="MSS: keep candidates within this MSE factor of SS, rank by bits")
    parser.add_argument("--max-bits", type=float, default=None,
                        help="MSS: keep candidates with at most this many bits per report")
    parser.add_argument("--seed", type=int, default=0, help="seed of the planner's random draws")
    parser.add_argument("--top", type=int, default=10, help="MSS: how many candidates to print")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if (args.k is None) == (args.attributes is None):
        raise ValueError("plan: give --k (one attribute) or --attributes (several), not both")
    if args.attributes is not None:
        return _attributes(args)
    if args.protocol not in (None, "mss"):
        raise ValueError(f"plan: --protocol must be 'mss' (moduli ranking) or absent (advisor), "
                         f"got {args.protocol!r}")
    if (args.protocol == "mss" or args.ell is not None or args.max_mse_factor is not None
            or args.max_bits is not None):
        return _mss(args)
    return _advise(args)


if __name__ == "__main__":
    run()
