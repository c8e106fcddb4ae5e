"""The averaging attack that memoization prevents (SPEC §7), numpy only.

A user holds one item for T rounds and reports every round. The attacker scores each candidate
item by the number of the user's reports that support it and guesses a uniform top-scoring one.
For GRR/L-GRR (support = the reported value) and OLH/LOLOHA (support = ``H_s(v) = y``) this is the
Bayes-optimal guess under a uniform prior: the likelihood of v is increasing in its support count
(L-GRR: ``Σ_b P1(b|v) Π_t P2(y_t|b) = q1·const + (p1−q1) L(v)``, L increasing in the count of v).

Re-randomized every round (``grr``, ``olh``), the attacker's success rate tends to 1 as T grows
(T reports at ε leak up to T·ε). Memoized (``lgrr``, ``loloha``), the reports are post-processing
of one permanent response, so it stays below the ε∞ bound: L-GRR → ``e^ε∞/(e^ε∞+k−1)``; LOLOHA
→ about ``p1·g·(1−(1−1/g)^k)/k`` (the hash hides v among ~k/g items).
"""
from __future__ import annotations

import numpy as np

from privfreq.protocols.attacks import pick_uniform
from privfreq.protocols.longitudinal_client import MemoStore

__all__ = ["averaging_attack_asr", "support_mask"]


def support_mask(protocol, batch) -> np.ndarray:
    """``bool[n, k]``: which items each report supports (GRR-like or hash-based protocols)."""
    items = np.arange(protocol.k)
    if hasattr(protocol, "hash_items"):
        return protocol.hash_items(batch.seed, items) == batch.values[:, :1]
    if getattr(protocol, "output_size", None) == protocol.k and batch.values.shape[1] == 1:
        return batch.values[:, :1] == items[None, :]
    raise ValueError(f"averaging attack: no support mask for {type(protocol).__name__} "
                     f"(GRR, OLH, L-GRR, LOLOHA)")


def averaging_attack_asr(protocol, rounds: int, n_users: int,
                         rng: np.random.Generator) -> np.ndarray:
    """Attacker success rate after T = 1..``rounds`` rounds (float64[rounds]).

    ``n_users`` users hold uniform items, fixed over the rounds. A longitudinal protocol reports
    through a ``MemoStore`` (permanent response drawn once); any other protocol is re-randomized
    from scratch every round.
    """
    k = protocol.k
    items = rng.integers(0, k, n_users)
    store = None
    if getattr(protocol, "longitudinal", False):
        store = MemoStore(protocol)
        store.add_users(n_users, rng)
    score = np.zeros((n_users, k), dtype=np.int32)
    out = np.empty(rounds)
    for t in range(rounds):
        batch = (store.report(np.arange(n_users), items, rng) if store is not None
                 else protocol.randomize(items, rng))
        score += support_mask(protocol, batch)
        guess = pick_uniform(score == score.max(axis=1, keepdims=True), rng)
        out[t] = np.mean(guess == items)
    return out
