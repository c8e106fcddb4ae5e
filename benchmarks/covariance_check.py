"""The numbers quoted for issues 10 and 17: MSS and RAPPOR covariance against a Monte Carlo of the
whole mechanism, and RAPPOR's decoder choice by cohorts·bits.

    python benchmarks/covariance_check.py [--trials 10000]

mss: a fixed Zipf(1.1) population (n = 2000; n = 1000 for the ε = 12 case) randomized afresh per
trial; measured MSE / ``predicted_mse(n, f)`` over ``--trials`` trials (its relative standard
error beside it) and ±2 stderr coverage over the first 2000 (the seeds of
tests/protocols/test_mss_covariance.py). rappor: the same for RAPPOR (k = 20, 16 bits, 2 hashes,
4 cohorts), 2000 trials. rappor-decoder: MSE of the default decoder (one-stage from cohorts·bits = 2k) and of the
two-stage one at cohorts·bits = k, 2k, 4k (k = 1024, n = 2·10^5, ε = 4, no IRR).
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from privfreq.protocols import mss_decoder  # noqa: E402
from privfreq.protocols.base import Counts  # noqa: E402
from privfreq.protocols.mss import ModularSubsetSelection as MSS  # noqa: E402
from privfreq.protocols.rappor import RAPPOR  # noqa: E402


def population(k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    w = np.arange(1, k + 1.0) ** -1.1
    counts = np.floor(w / w.sum() * n).astype(np.int64)
    counts[0] += n - counts.sum()
    return np.repeat(np.arange(k), counts), counts / n


def report(err: np.ndarray, se: np.ndarray, predicted: float, label: str) -> None:
    per_trial = (err ** 2).mean(axis=1)
    rel_se = per_trial.std() / per_trial.mean() / np.sqrt(len(per_trial))
    covered = np.abs(err[:len(se)]) <= 2 * se
    print(f"{label}: MSE / predicted {per_trial.mean() / predicted:.3f} (rel. se {rel_se:.3f}), "
          f"±2 stderr coverage {covered.mean():.3f} over {len(se)} trials", flush=True)


def mss(trials: int) -> None:
    for k, moduli, eps, n, seed in [(11, (5, 7), 4.0, 2000, 13), (30, (5, 7, 8, 9, 11), 3.0, 2000, 35),
                                    (30, (16, 17), 5.0, 2000, 32), (14, (7, 8), 12.0, 1000, 12)]:
        proto = MSS(k, eps, moduli)
        items, f = population(k, n)
        rng = np.random.default_rng(seed)
        rows = proto.count_shape()[0]
        est, ses = np.empty((trials, k)), []
        for lo in range(0, trials, 1000):
            t = min(1000, trials - lo)
            batch = proto.randomize(np.tile(items, t), rng)
            trial = np.repeat(np.arange(t), n)
            key = (trial * rows + proto.offsets[batch.block])[:, None] + batch.values
            counts = np.bincount(key[batch.values >= 0], minlength=t * rows).reshape(t, rows)
            n_block = np.bincount(trial * proto.ell + batch.block,
                                  minlength=t * proto.ell).reshape(t, proto.ell)
            for i in range(t):
                e = mss_decoder.decode(proto, Counts(counts[i], n_block[i]),
                                       stderr=lo + i < 2000, solver="direct")
                est[lo + i] = e.frequencies
                if lo + i < 2000:
                    ses.append(e.stderr)
        report(est - f, np.array(ses), proto.predicted_mse(n, f), f"MSS k={k} {moduli} ε={eps}")


def rappor(trials: int) -> None:
    for kwargs in (dict(epsilon=8.0, p=0.0, q=1.0), dict(epsilon=4.0)):
        r = RAPPOR(20, bloom_bits=16, hashes=2, cohorts=4, **kwargs)
        items, f = population(20, 1000)
        rng = np.random.default_rng(11)
        est, se = np.empty((trials, 20)), np.empty((trials, 20))
        for t in range(trials):
            e = r.estimate(r.add_reports(r.create_accumulator(), r.randomize(items, rng)))
            est[t], se[t] = e.frequencies, e.stderr
        report(est - f, se, r.predicted_mse(1000, f), f"RAPPOR k=20 {kwargs}")


def rappor_decoder() -> None:
    k, n = 1024, 200_000
    rng = np.random.default_rng(0)
    items = np.minimum(rng.zipf(1.1, n) - 1, k - 1)
    f = np.bincount(items, minlength=k) / n
    for cohorts in (8, 16, 32):
        r = RAPPOR(k=k, epsilon=4.0, bloom_bits=128, hashes=2, cohorts=cohorts, p=0.0, q=1.0)
        acc = r.add_reports(r.create_accumulator(), r.randomize(items, np.random.default_rng(1)))
        one = r.estimate(acc, stderr=False)
        two = r.estimate(acc, stderr=False, candidates=np.arange(k))
        mse = {name: float(np.mean((e.frequencies - f) ** 2)) for name, e in
               (("default", one), ("two-stage", two))}
        print(f"RAPPOR k=1024 C·b={cohorts * 128} ({'one-stage' if r.full_rank_decoder else 'two-stage'}"
              f" by default): MSE default {mse['default']:.2e}, two-stage {mse['two-stage']:.2e}",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--only", choices=["mss", "rappor", "rappor-decoder"], default=None)
    args = ap.parse_args()
    if args.only in (None, "mss"):
        mss(args.trials)
    if args.only in (None, "rappor"):
        rappor(2000)
    if args.only in (None, "rappor-decoder"):
        rappor_decoder()


if __name__ == "__main__":
    main()
