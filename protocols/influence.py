"""How far one hostile report can move an estimate (numpy only; no Beam).

A hostile client may send any report the server *accepts* (well-formed: right fingerprint, block,
seed range, payload length and a payload that decodes), chosen after seeing the data. Its influence
on item x is ``|f̂_x(D ∪ {h}) − f̂_x(D)|`` for the raw estimate of the accepted reports D. Two
functions, for every protocol of the registry, each the protocol's own method:

* :func:`influence_bound` ``(protocol, n_block)`` — an upper bound over **every** dataset D with
  these reports per block and every accepted h. Closed form for the support-counting protocols
  (``base.SupportCounting``: ``1/((n+1)(p − q))``), tight (attained when some item's support count
  is 0 or n); a dense rank-update bound for the least-squares decoders
  (``least_squares.LeastSquaresDecoder``, k <= DENSE_LIMIT). Both scale as 1/n.
* :func:`worst_case_influence` ``(protocol, counts)`` — the exact maximum over all accepted h,
  per item, for the data at hand.
"""
from __future__ import annotations

import numpy as np

from privfreq.protocols.base import DENSE_LIMIT, Counts, FrequencyProtocol

__all__ = ["DENSE_LIMIT", "influence_bound", "worst_case_influence"]


def _check(protocol) -> None:
    if not isinstance(protocol, FrequencyProtocol):
        raise ValueError(f"influence: expected a protocol, got {type(protocol).__name__}")


def influence_bound(protocol, n_block) -> float:
    """Upper bound on ``max_x |f̂_x(D ∪ {h}) − f̂_x(D)|`` over every accepted report h and every
    dataset D with ``n_block`` reports per block (an int for single-block protocols)."""
    _check(protocol)
    return protocol.influence_bound(n_block)


def worst_case_influence(protocol, counts: Counts) -> np.ndarray:
    """Per item x, the exact ``max_h |f̂_x(D ∪ {h}) − f̂_x(D)|`` over every accepted report h, for
    the reports D behind ``counts``. (OLH: over every seed and hashed value.)"""
    _check(protocol)
    return protocol.worst_case_influence(counts)
