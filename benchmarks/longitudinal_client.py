"""Longitudinal collection benchmarks (issue 12): client speed, the averaging attack, done-when.

    python benchmarks/longitudinal_client.py speed [--reports 2000000] [--users 100000]
    python benchmarks/longitudinal_client.py attack [--k 32] [--users 4000]
    python benchmarks/longitudinal_client.py done-when [--runs 50] [--k 64,1024] [--protocols ...]
    python benchmarks/longitudinal_client.py calibration
    python benchmarks/longitudinal_client.py encode-state [--n 1000000] [--before-rev 7bbff0a]

speed: stateful in-memory randomization (``MemoStore.report``, memo entries already drawn: the
steady state of a daily collection) of L-GRR and LOLOHA vs the stateless ``randomize``, and the
SQLite path (``SqliteStateStore.report``, one transaction per batch of 10^5 users; second
round, so every user is read, and those without a new memo key are not rewritten) vs the
in-memory one. All ratios from one run.
attack: attacker success rate vs T for GRR/OLH re-randomized every round vs L-GRR/LOLOHA.
done-when: k ∈ {64, 1024}, ε∞ ∈ {1, 2, 4}, ε1 = 0.4·ε∞, n = 10^4, 10 rounds, change rate 0.1,
Zipf(1.1) items; mean per-round MSE / mean formula over the runs, per protocol; the ledger of every
user checked against its distinct memo keys (recomputed from the item history) and the cap.
encode-state: ``privfreq encode --state`` end to end (Parquet input of user_id, item -> Avro),
LOLOHA k = 64, ε∞ = 2, ε1 = 0.8, n users in random order: round 0 (every user new) and round 1
(the same users, 10 % with a new item), beside the stateless ``encode`` of the same rows; with
``--before-rev`` also the ``SqliteStateStore`` of that git revision at its batch size (2^16),
interleaved in one process. users/s and the ratio to the stateless path.
calibration: V*(paper)/V*(exact) at f = 0 for L-GRR and LOLOHA (each with its own best g).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import zlib

import numpy as np

from privfreq.protocols.dbitflip import DBitFlipPM
from privfreq.protocols.grr import GRR
from privfreq.protocols.lgrr import LGRR
from privfreq.protocols.loloha import LOLOHA, BiLOLOHA
from privfreq.protocols.longitudinal_attacks import averaging_attack_asr
from privfreq.protocols.longitudinal_client import MemoStore, SqliteStateStore
from privfreq.protocols.longitudinal_unary import LOSUE, LSUE
from privfreq.protocols.olh import OLH

from _timing import best_of


def speed(args):
    rng = np.random.default_rng(1)
    n_users, per = args.users, max(1, args.reports // args.users)
    print(f"| protocol | stateless randomize (reports/s) | MemoStore.report (reports/s) | "
          f"stateful/stateless | SQLite (users/s) | SQLite/in-memory |")
    print("|---|---|---|---|---|---|")
    for proto in (LGRR(args.k, 2.0, 0.8), LOLOHA(args.k, 2.0, 0.8)):
        store = MemoStore(proto)
        store.add_users(n_users, rng)
        items = rng.integers(0, proto.k, n_users)
        users = np.tile(np.arange(n_users), per)
        its = np.tile(items, per)
        store.report(users, its, rng)  # round 1 draws the memo entries
        n = len(users)
        t_stateless = best_of(lambda: proto.randomize(its, rng))
        t_state = best_of(lambda: store.report(users, its, rng))
        # SQLite: one batch = n_users rows; first call inserts, the timed ones read + update
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "users.sqlite")
            with SqliteStateStore(path, proto) as sql:
                ids = np.arange(n_users, dtype=np.int64) * 7919
                sql.report(ids, items, rng)
                t_sql = best_of(lambda: sql.report(ids, items, rng))
        t_mem_batch = best_of(lambda: store.report(np.arange(n_users), items, rng))
        print(f"| {proto.display_name} k={proto.k} | {n / t_stateless:.3g} | {n / t_state:.3g} | "
              f"{t_stateless / t_state:.2f} | {n_users / t_sql:.3g} | "
              f"{t_mem_batch / t_sql:.3f} |")


def attack(args):
    rng = np.random.default_rng(2)
    k, ei, e1 = args.k, 2.0, 0.8
    ts = [1, 2, 5, 10, 20, 50, 100]
    print(f"k = {k}, ε∞ = {ei}, ε1 = {e1}, {args.users} users, each holding one item for T "
          f"rounds; attacker success rate (fraction of users whose item is guessed)")
    print("| protocol | " + " | ".join(f"T={t}" for t in ts) + " |")
    print("|---|" + "---|" * len(ts))
    for p in (GRR(k, e1), OLH(k, e1), LGRR(k, ei, e1), LOLOHA(k, ei, e1)):
        asr = averaging_attack_asr(p, max(ts), args.users, rng)
        name = p.display_name + (" (re-randomized)" if not getattr(p, "longitudinal", False)
                                 else " (memoized)")
        print(f"| {name} | " + " | ".join(f"{asr[t - 1]:.3f}" for t in ts) + " |")


PROTOCOLS = {
    "lgrr": lambda k, ei, e1: LGRR(k, ei, e1),
    "losue": lambda k, ei, e1: LOSUE(k, ei, e1),
    "lsue": lambda k, ei, e1: LSUE(k, ei, e1),
    "loloha": lambda k, ei, e1: LOLOHA(k, ei, e1),
    "biloloha": lambda k, ei, e1: BiLOLOHA(k, ei, e1),
    "dbitflip": lambda k, ei, e1: DBitFlipPM(k, ei, d=4),
}


def zipf(k, s=1.1):
    w = (np.arange(k) + 1.0) ** -s
    return w / w.sum()


def one_run(proto, n, rounds, change, dist, rng):
    store = MemoStore(proto)
    store.add_users(n, rng)
    items = rng.choice(proto.k, n, p=dist)
    mse, pred, keys = [], [], []
    for _ in range(rounds):
        change_mask = rng.random(n) < change
        items = np.where(change_mask, rng.choice(proto.k, n, p=dist), items)
        batch = store.report(np.arange(n), items, rng)
        acc = proto.add_reports(proto.create_accumulator(), batch)
        f = np.bincount(items, minlength=proto.k) / n
        mse.append(np.mean((proto.estimate(acc, stderr=False).frequencies - f) ** 2))
        pred.append(proto.predicted_mse(n, f))
        keys.append(proto.memo_keys(items, store.public))
    # ledger: distinct memo keys per user from the item history, independently of the store
    k_hist = np.sort(np.array(keys).T, axis=1)
    distinct = 1 + (np.diff(k_hist, axis=1) != 0).sum(axis=1)
    ledger_ok = bool(np.array_equal(store.n_keys, distinct)
                     and np.allclose(store.spent(), proto.epsilon_perm * distinct)
                     and (store.spent() <= proto.budget_cap + 1e-9).all())
    return np.mean(mse), np.mean(pred), ledger_ok, store.spent()


def done_when(args):
    ks = [int(v) for v in args.k_list.split(",")]
    eps_list = [float(v) for v in args.eps_list.split(",")]
    print(f"n = {args.n}, {args.rounds} rounds, change rate {args.change}, Zipf(1.1), "
          f"ε1 = {args.alpha}·ε∞, {args.runs} seeded runs per cell")
    print("| protocol | k | ε∞ | mean MSE | mean formula | ratio | ledger ok | spent mean/max | "
          "cap |")
    print("|---|---|---|---|---|---|---|---|---|")
    worst = 0.0
    for pid in args.protocols.split(","):
        for k in ks:
            for ei in eps_list:
                proto = PROTOCOLS[pid](k, ei, args.alpha * ei)
                # zlib.crc32, not hash(): str hashes are salted per process (PYTHONHASHSEED)
                rng = np.random.default_rng([k, int(ei * 10), zlib.crc32(pid.encode()) % 1000])
                res = [one_run(proto, args.n, args.rounds, args.change, zipf(k), rng)
                       for _ in range(args.runs)]
                m = np.mean([r[0] for r in res])
                p = np.mean([r[1] for r in res])
                ok = all(r[2] for r in res)
                spent = np.concatenate([r[3] for r in res])
                worst = max(worst, abs(m / p - 1))
                print(f"| {proto.display_name} | {k} | {ei:g} | {m:.4g} | {p:.4g} | {m / p:.3f} | "
                      f"{ok} | {spent.mean():.2f}/{spent.max():.0f} | {proto.budget_cap:g} |",
                      flush=True)
    print(f"worst |ratio − 1| = {worst:.3f}")


def encode_state(args):
    import importlib.util
    import shutil
    import subprocess

    import pyarrow as pa
    import pyarrow.parquet as pq

    import privfreq.protocols.longitudinal_client as lc
    from privfreq.pipelines import cli
    from privfreq.protocols.config import CollectionConfig

    cfg = CollectionConfig("loloha", {"k": 64, "epsilon_perm": 2.0, "epsilon": 0.8})
    n, rng = args.n, np.random.default_rng(1)
    d = tempfile.mkdtemp()
    users = rng.permutation(n).astype(np.int64) * 7919
    it0 = rng.integers(0, 64, n)
    it1 = np.where(rng.random(n) < 0.1, rng.integers(0, 64, n), it0)
    for r, it in ((0, it0), (1, it1)):
        pq.write_table(pa.table({"user_id": users, "item": it}), f"{d}/d{r}.parquet")
    with open(f"{d}/c.json", "w") as f:
        f.write(cfg.to_json())
    variants = {"this tree": (lc.SqliteStateStore, [])}
    if args.before_rev:
        src = subprocess.run(["git", "show", f"{args.before_rev}:protocols/longitudinal_client.py"],
                             check=True, capture_output=True, text=True).stdout
        with open(f"{d}/before.py", "w") as f:
            f.write(src)
        spec = importlib.util.spec_from_file_location("lc_before", f"{d}/before.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        variants[f"{args.before_rev} (2^16 batches)"] = (mod.SqliteStateStore,
                                                         ["--batch-rows", str(1 << 16)])

    def timed(argv):
        t = time.perf_counter()
        cli.main(argv)
        return time.perf_counter() - t

    base = ["encode", "--config", f"{d}/c.json", "--output", f"{d}/out.avro", "--seed", "1"]
    print(f"n = {n} LOLOHA users (k = 64, ε∞ = 2, ε1 = 0.8), best of {args.repeat}")
    print("| path | round 0 (new users) users/s | ratio to stateless | "
          "round 1 (returning) users/s | ratio to stateless |")
    print("|---|---|---|---|---|")
    best = {}
    real = lc.SqliteStateStore
    try:
        for rep in range(args.repeat):
            t_sl = timed(base + ["--input", f"{d}/d0.parquet"])
            best["stateless"] = min(best.get("stateless", np.inf), t_sl)
            for name, (cls, extra) in variants.items():
                lc.SqliteStateStore = cls
                st = f"{d}/{rep}-{len(name)}.sqlite"
                for r in (0, 1):
                    t = timed(base + ["--input", f"{d}/d{r}.parquet", "--round", str(r),
                                      "--state", st, *extra])
                    best[name, r] = min(best.get((name, r), np.inf), t)
                lc.SqliteStateStore = real
    finally:
        lc.SqliteStateStore = real
        shutil.rmtree(d)
    t_sl = best["stateless"]
    print(f"| stateless encode | {n / t_sl:.3g} | 1 | {n / t_sl:.3g} | 1 |")
    for name in variants:
        t0, t1 = best[name, 0], best[name, 1]
        print(f"| --state, {name} | {n / t0:.3g} | {t_sl / t0:.3f} | {n / t1:.3g} | "
              f"{t_sl / t1:.3f} |")


def calibration(args):
    print("| k | ε∞ | ε1 | L-GRR V*(paper)/V*(exact) | LOLOHA g exact/paper | "
          "LOLOHA V*(paper)/V*(exact) |")
    print("|---|---|---|---|---|---|")
    for k in (64, 1024):
        for ei in (1.0, 2.0, 4.0):
            e1 = 0.4 * ei
            lg = LGRR(k, ei, e1, "paper").variance(1)[0] / LGRR(k, ei, e1).variance(1)[0]
            a, b = LOLOHA(k, ei, e1), LOLOHA(k, ei, e1, "paper")
            print(f"| {k} | {ei:g} | {e1:g} | {lg:.1f} | {a.g}/{b.g} | "
                  f"{b.variance(1)[0] / a.variance(1)[0]:.3f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--reports", type=int, default=2_000_000)
    s.add_argument("--users", type=int, default=100_000)
    s.add_argument("--k", type=int, default=64)
    a = sub.add_parser("attack")
    a.add_argument("--k", type=int, default=32)
    a.add_argument("--users", type=int, default=4000)
    d = sub.add_parser("done-when")
    d.add_argument("--runs", type=int, default=50)
    d.add_argument("--k-list", default="64,1024")
    d.add_argument("--eps-list", default="1,2,4", help="ε∞ values")
    d.add_argument("--n", type=int, default=10_000)
    d.add_argument("--rounds", type=int, default=10)
    d.add_argument("--change", type=float, default=0.1)
    d.add_argument("--alpha", type=float, default=0.4)
    d.add_argument("--protocols", default=",".join(PROTOCOLS))
    sub.add_parser("calibration")
    e = sub.add_parser("encode-state")
    e.add_argument("--n", type=int, default=1_000_000)
    e.add_argument("--repeat", type=int, default=2)
    e.add_argument("--before-rev", default=None,
                   help="git revision whose SqliteStateStore to time beside this tree's")
    args = ap.parse_args()
    {"speed": speed, "attack": attack, "done-when": done_when, "calibration": calibration,
     "encode-state": encode_state}[args.cmd](args)


if __name__ == "__main__":
    main()
