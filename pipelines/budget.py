"""The privacy budget spent per user of a longitudinal collection's state (SPEC §7), no Beam.

    privfreq budget --state users.sqlite [--json]

Reads the SQLite state of ``privfreq encode --state`` (the collection config is stored in it)
and prints the distribution of ε spent per user, ``ε∞ × distinct memo keys``: number of users,
mean, p50, p99, max, the cap (``memo_key_count · ε∞``) and how many users reached it. ``--json``
prints the same as one JSON object (keys of :func:`budget_summary`). The state is opened
read-only; a missing file or a file that is not a privfreq state is an error.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import numpy as np

from privfreq.protocols.config import CollectionConfig

__all__ = ["budget_summary", "read_spent", "run", "spent_summary"]


def read_spent(state: str) -> tuple[CollectionConfig, np.ndarray]:
    """``(config, ε spent per user)`` of the state file ``state``, opened read-only."""
    if not Path(state).is_file():
        raise ValueError(f"--state: {state!r} does not exist")
    conn = sqlite3.connect(f"file:{Path(state).resolve()}?mode=ro", uri=True)
    try:
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            n_keys = np.array([r[0] for r in conn.execute(
                "SELECT length(keys) / 4 FROM users")], dtype=np.int64)
        except sqlite3.DatabaseError as e:
            raise ValueError(f"--state: {state!r} is not a privfreq longitudinal state ({e})") \
                from None
    finally:
        conn.close()
    if "config" not in meta:
        raise ValueError(f"--state: {state!r} holds no collection config (not a privfreq state)")
    config = CollectionConfig.from_json(meta["config"])
    return config, n_keys * float(config.protocol.epsilon_perm)


def spent_summary(spent: np.ndarray, cap: float) -> dict:
    """``n_users, mean, p50, p99, max, cap, at_cap`` of per-user spent ε (0 users: nulls)."""
    spent = np.asarray(spent, dtype=np.float64)
    if not len(spent):
        return {"n_users": 0, "mean": None, "p50": None, "p99": None, "max": None,
                "cap": cap, "at_cap": 0}
    return {"n_users": int(len(spent)), "mean": float(spent.mean()),
            "p50": float(np.quantile(spent, 0.5)), "p99": float(np.quantile(spent, 0.99)),
            "max": float(spent.max()), "cap": float(cap),
            # spent is ε∞·(integer keys); the cap is reached with all memo keys used
            "at_cap": int(np.count_nonzero(spent >= cap * (1 - 1e-12)))}


def budget_summary(state: str) -> dict:
    """The budget of ``state``: ``protocol``, ``fingerprint``, ``epsilon_perm``, ``epsilon``
    and :func:`spent_summary`'s keys."""
    config, spent = read_spent(state)
    proto = config.protocol
    return {"protocol": config.protocol_id, "fingerprint": config.fingerprint,
            "epsilon_perm": float(proto.epsilon_perm), "epsilon": float(proto.epsilon),
            **spent_summary(spent, float(proto.budget_cap))}


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def run(argv=None, save_main_session=True):
    parser = argparse.ArgumentParser(prog="privfreq budget", description=__doc__.split("\n")[0])
    parser.add_argument("--state", required=True, help="SQLite state of `privfreq encode --state`")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    s = budget_summary(args.state)
    if args.json:
        print(json.dumps(s, sort_keys=True))
    else:
        print(f"{s['protocol']} {s['fingerprint']}: eps_perm={s['epsilon_perm']:g} "
              f"eps1={s['epsilon']:g} cap={s['cap']:g}")
        print(f"users {s['n_users']}  spent ε per user: mean {_fmt(s['mean'])}  "
              f"p50 {_fmt(s['p50'])}  p99 {_fmt(s['p99'])}  max {_fmt(s['max'])}  "
              f"at cap {s['at_cap']}")
    return s


if __name__ == "__main__":
    run()
