"""Heavy-hitter discovery with PEM on real text (issue 14), no Beam.

    python benchmarks/heavy_hitters.py [--n 100000 1000000] [--eps 2 4] [--runs 10] \
        [--top 20] [--bits 32] [--step 8] [--out benchmarks/results/heavy_hitters.md]

Truth: the English word-frequency list that the ``wordfreq`` package ships inside itself
(``wordfreq.get_frequency_dict('en')``, no download at run time; install with
``pip install -e '.[bench]'``), its top ``--vocab`` words renormalised to 1 − planted mass, plus
five planted made-up words (``PLANTED``). Each run draws n users from that distribution (seeded),
maps words to ids with ``protocols.hashing.item_id`` (top ``--bits`` bits: a ``2^bits`` universe
the server never lists), randomizes them with PEM and runs ``protocols.pem.discover(top=N)``.
Precision and recall of the discovered top-N against the true top-N, mean ± sd over seeded runs.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from privfreq.protocols.hashing import item_id
from privfreq.protocols.pem import PEM, discover

# Invented words, not in any dictionary, with their share of all users.
PLANTED = {"zyxplanted-a": 0.030, "zyxplanted-b": 0.020, "zyxplanted-c": 0.012,
           "zyxplanted-d": 0.008, "zyxplanted-e": 0.006}


def word_distribution(vocab: int):
    """(words, probabilities) of the real list's top ``vocab`` words plus the planted ones."""
    import wordfreq  # benchmark-only dependency (the "bench" extra)

    freq = wordfreq.get_frequency_dict("en")
    words = sorted(freq, key=freq.get, reverse=True)[:vocab]
    p = np.array([freq[w] for w in words])
    p *= (1 - sum(PLANTED.values())) / p.sum()
    words = words + list(PLANTED)
    p = np.r_[p, list(PLANTED.values())]
    return words, p / p.sum()


def one_run(ids, p, n, eps, top, bits, step, seed, keep):
    rng = np.random.default_rng(seed)
    users = ids[rng.choice(len(ids), n, p=p)]
    proto = PEM(2**bits, eps, step=step)
    t0 = time.perf_counter()
    batch = proto.randomize(users, rng)
    t1 = time.perf_counter()
    acc = proto.add_reports(proto.create_accumulator(), batch)
    found = discover(proto, acc, top=top, keep=keep)
    t2 = time.perf_counter()
    truth = set(ids[np.argsort(-p, kind="stable")[:top]].tolist())
    hit = len(truth & set(found.items.tolist()))
    return hit / len(found.items), hit / top, t1 - t0, t2 - t1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10**5, 10**6])
    ap.add_argument("--eps", type=float, nargs="+", default=[2.0, 4.0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--keep", type=int, default=None, help="candidates kept per level (2·top)")
    ap.add_argument("--bits", type=int, default=32)
    ap.add_argument("--step", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=100000)
    ap.add_argument("--out", default=None, help="append the markdown table to this file")
    args = ap.parse_args(argv)
    words, p = word_distribution(args.vocab)
    ids = (item_id(words).view(np.uint64) >> np.uint64(64 - args.bits)).astype(np.int64)
    if len(np.unique(ids)) != len(ids):
        print(f"note: {len(ids) - len(np.unique(ids))} id collisions among {len(ids)} words",
              file=sys.stderr)
    top_p = np.sort(p)[::-1]
    lines = [f"Command: `python benchmarks/{' '.join(['heavy_hitters.py'] + (argv or sys.argv[1:]))}`",
             "",
             f"Truth: wordfreq {args.vocab} English words + {len(PLANTED)} planted "
             f"({', '.join(f'{v:.1%}' for v in PLANTED.values())}); true top-{args.top} shares "
             f"{top_p[0]:.2%} .. {top_p[args.top - 1]:.2%} (#{args.top + 1}: "
             f"{top_p[args.top]:.2%}). PEM on 2^{args.bits} ids, step {args.step}, "
             f"keep {args.keep or 2 * args.top}, {args.runs} seeded runs per cell.",
             "",
             "| n | ε | precision | recall | client s | server s |",
             "|---|---|---|---|---|---|"]
    for n in args.n:
        for eps in args.eps:
            res = np.array([one_run(ids, p, n, eps, args.top, args.bits, args.step, seed,
                                    args.keep) for seed in range(args.runs)])
            m, s = res.mean(axis=0), res.std(axis=0, ddof=1)
            lines.append(f"| {n:.0e} | {eps:g} | {m[0]:.3f} ± {s[0]:.3f} | {m[1]:.3f} ± {s[1]:.3f}"
                         f" | {m[2]:.2f} | {m[3]:.2f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
