"""Empirical privacy audit: a high-confidence lower bound on ε from randomizer samples.

For two inputs ``x0`` and ``x1`` the randomizer ``M`` is ε-LDP only if ``P[M(x0) ∈ E] <=
e^ε P[M(x1) ∈ E]`` for every event ``E``. The audit samples ``M(x0)`` and ``M(x1)`` ``n`` times
each and, for an event ``E`` fixed before looking at the evaluation samples, bounds

    ε >= ln( CP_lower(P[M(x0) ∈ E]) / CP_upper(P[M(x1) ∈ E]) )

with Clopper–Pearson bounds (``scipy.stats.beta``). Both directions (x0 over x1 and x1 over x0)
are tested; the four one-sided bounds each get ``(1 - confidence) / 4`` (Bonferroni), so with
probability at least ``confidence`` the reported bound is <= the true ε of the pair, hence <= the
configured ε of a correct randomizer. A bound above the configured ε is evidence of a privacy bug.

Choosing the event, generically and vectorized: every report is reduced to its exact output key
(block, public seed, values row) with ``np.unique(axis=0)``. The first half of the samples ranks
the outputs by their likelihood ratio ``(c0 + ½) / (c1 + ½)`` and picks the prefix (the
likelihood-ratio threshold event) that maximises the same bound on that half; the second, held-out
half evaluates it. The family contains the Neyman–Pearson optimal events, so for protocols whose
output space is small compared with the samples (GRR, SS, MSS, OUE at small k) the bound comes close
to ε; for protocols with per-report public randomness (OLH's hash seed) outputs rarely repeat and the
bound is valid but loose. "The report supports x0" is one event of this family whenever it is
determined by the output, as it is for every protocol here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import beta

from privfreq.protocols.base import FrequencyProtocol, ReportBatch, check_int

__all__ = ["STAGES", "AuditResult", "audit", "clopper_pearson", "output_keys"]


@dataclass(frozen=True)
class AuditResult:
    epsilon_lower_bound: float    # max(0, best of both directions) at the given confidence
    epsilon: float                # the configured ε
    confidence: float
    samples: int                  # samples per input (half choose the event, half evaluate it)
    x0: int | list               # an item, or a multi-attribute protocol's tuple
    x1: int | list
    direction: str                # "x0/x1" or "x1/x0": which direction gave the bound
    event_size: int               # number of distinct outputs in the chosen event
    p0_hits: int                  # evaluation hits of the event under the numerator input
    p1_hits: int                  # ... and under the denominator input
    distinct_outputs: int
    stage: str = "report"         # "report" (one report, ε) or "permanent" (round 1, ε∞)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def clopper_pearson(hits, n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """One-sided Clopper–Pearson bounds ``(lower, upper)``, each holding with prob. ``1 - alpha``."""
    hits = np.asarray(hits, dtype=np.float64)
    lower = np.where(hits > 0, beta.ppf(alpha, np.maximum(hits, 1), n - hits + 1), 0.0)
    upper = np.where(hits < n, beta.ppf(1 - alpha, hits + 1, np.maximum(n - hits, 1)), 1.0)
    return lower, upper


def output_keys(batch: ReportBatch) -> np.ndarray:
    """One int64 row per report holding its whole output: (block, seed, values...)."""
    values = np.asarray(batch.values)
    if values.dtype == np.bool_:
        values = values.astype(np.int64)
    values = values.reshape(len(values), -1).astype(np.int64)
    return np.column_stack([batch.block.astype(np.int64), batch.seed.astype(np.int64), values])


def _log_ratio(h_num, h_den, n: int, alpha: float) -> np.ndarray:
    lo, _ = clopper_pearson(h_num, n, alpha)
    _, hi = clopper_pearson(h_den, n, alpha)
    with np.errstate(divide="ignore"):
        return np.log(lo) - np.log(hi)


def _one_direction(tr_num, tr_den, ev_num, ev_den, n_train: int, n_eval: int, alpha: float):
    """Choose the LR-threshold event on the training counts, evaluate it on held-out counts."""
    order = np.argsort(-((tr_num + 0.5) / (tr_den + 0.5)), kind="stable")
    cum_num = np.cumsum(tr_num[order])
    cum_den = np.cumsum(tr_den[order])
    t = int(np.argmax(_log_ratio(cum_num, cum_den, n_train, alpha)))
    event = order[:t + 1]
    h_num, h_den = int(ev_num[event].sum()), int(ev_den[event].sum())
    return float(_log_ratio(h_num, h_den, n_eval, alpha)), len(event), h_num, h_den


STAGES = ("report", "permanent")


def _check_input(protocol: FrequencyProtocol, name: str, x):
    """An item in ``[0, k)``, or for a multi-attribute protocol a tuple of d values (list)."""
    if not getattr(protocol, "multi_attribute", False):
        return check_int("audit", name, x, 0, protocol.k - 1)
    values = list(x) if isinstance(x, (list, tuple, np.ndarray)) else None
    if values is None or len(values) != protocol.d:
        raise ValueError(f"audit: {name} must be a tuple of {protocol.d} values (one per "
                         f"attribute {list(protocol.attributes)}), got {x!r}")
    return [check_int("audit", f"{name}[{a}]", v, 0, k - 1)
            for a, v, k in zip(protocol.attributes, values, protocol.domains)]


def audit(protocol: FrequencyProtocol, samples: int = 100_000, confidence: float = 0.95,
          x0: int = 0, x1: int = 1, rng: np.random.Generator | None = None,
          stage: str = "report") -> AuditResult:
    """Lower-bound ε of ``protocol`` on the pair ``(x0, x1)`` from ``samples`` reports each.

    ``stage``: ``"report"`` audits one report against ``protocol.epsilon`` (a longitudinal
    protocol's ε1: a fresh user's permanent and instantaneous rounds; a multi-attribute protocol's
    tuple-level ε, with ``x0``/``x1`` tuples); ``"permanent"`` audits a
    longitudinal protocol's round-1 output (public state and memo entry,
    ``randomize_permanent``) against ``epsilon_perm`` (ε∞).
    """
    if stage not in STAGES:
        raise ValueError(f"audit: stage must be one of {list(STAGES)}, got {stage!r}")
    if stage == "permanent" and not getattr(protocol, "longitudinal", False):
        raise ValueError(f"audit: stage 'permanent' needs a longitudinal protocol, got "
                         f"{type(protocol).__name__}")
    samples = check_int("audit", "samples", samples, 4)
    x0, x1 = _check_input(protocol, "x0", x0), _check_input(protocol, "x1", x1)
    if x0 == x1:
        raise ValueError(f"audit: x0 and x1 must differ, got {x0} and {x1}")
    if not (isinstance(confidence, (float, int)) and 0 < confidence < 1):
        raise ValueError(f"audit: confidence must be in (0, 1), got {confidence!r}")
    rng = np.random.default_rng() if rng is None else rng
    sampler = protocol.randomize_permanent if stage == "permanent" else protocol.randomize
    configured = (protocol.epsilon_perm if stage == "permanent"
                  else getattr(protocol, "tuple_epsilon", protocol.epsilon))
    b0 = sampler(np.tile(np.asarray(x0, dtype=np.int64), (samples,) + (1,) * np.ndim(x0)), rng)
    b1 = sampler(np.tile(np.asarray(x1, dtype=np.int64), (samples,) + (1,) * np.ndim(x1)), rng)
    _, ids = np.unique(np.vstack([output_keys(b0), output_keys(b1)]), axis=0,
                       return_inverse=True)
    ids = ids.reshape(-1)
    n_out = int(ids.max()) + 1
    n_train = samples // 2
    n_eval = samples - n_train
    id0, id1 = ids[:samples], ids[samples:]

    def counts(x):
        return np.bincount(x, minlength=n_out)

    tr0, tr1 = counts(id0[:n_train]), counts(id1[:n_train])
    ev0, ev1 = counts(id0[n_train:]), counts(id1[n_train:])
    alpha = (1 - confidence) / 4  # two directions × (lower, upper) bound
    best = max(
        (*_one_direction(tr0, tr1, ev0, ev1, n_train, n_eval, alpha), "x0/x1"),
        (*_one_direction(tr1, tr0, ev1, ev0, n_train, n_eval, alpha), "x1/x0"),
        key=lambda r: r[0])
    lb, size, h_num, h_den, direction = best
    return AuditResult(epsilon_lower_bound=max(0.0, lb), epsilon=float(configured),
                       confidence=float(confidence), samples=samples, x0=x0, x1=x1,
                       direction=direction, event_size=size, p0_hits=h_num, p1_hits=h_den,
                       distinct_outputs=n_out, stage=stage)
