"""Reconstruction attacks on single reports and their success rates (SPEC §4), numpy only.

The adversary sees one report and guesses the user's item under a uniform prior; the attacker
success rate (ASR) is the fraction of correct guesses. For every protocol the guess is the
Bayes-optimal (maximum-likelihood) one: a uniform member of the set of items that make the
observed report most likely, ties broken uniformly with an injected ``numpy.random.Generator``.
Attacks are vectorized over a ``ReportBatch``; protocols whose candidate set must be found by
scanning the domain (OUE, SUE, OLH, HR, PGR, RAPPOR) work in row chunks of
``CHUNK_ELEMENTS // k`` reports, O(n·k) element operations in numpy, never a per-report loop.

| protocol | guess | closed form (``closed_form_asr``) |
|---|---|---|
| grr | the reported value | exact: ``e^ε/(e^ε+k−1)`` |
| ss | a uniform member of Z | exact: ``e^ε/(ω e^ε + k − ω)`` |
| mss | r uniform in Z, then x uniform in ``{x<k : x ≡ r (mod m_j)}`` | exact given f: ``(1/ℓ) Σ_j p_j/ω_j · Σ_x f_x/|class_j(x)|``; SPEC's approximation ``(1/ℓ) Σ_j p_j/(ω_j⌈k/m_j⌉)`` in ``mss_asr_approx`` |
| oue, sue | a uniform index among the 1-bits (uniform over [k] if none) | exact: ``p·(1−(1−q)^k)/(k q) + (1−p)(1−q)^{k−1}/k`` (from ``E[1/(1+B)] = (1−(1−q)^k)/(kq)``, ``B ~ Bin(k−1, q)``) |
| olh | a uniform member of ``{v : H_s(v) = y}`` (uniform over [k] if empty) | approximate (ideal random hash): ``p·g·(1−(1−1/g)^k)/k`` |
| hr | a uniform member of ``{x : y ∈ C_x}`` | exact given f, via one Walsh–Hadamard transform per block |
| pgr | a uniform member of ``S_u ∩ [k]`` | exact given f, via two calls of the O(K·q·t) support-sum transform |
| rappor | the MAP item: most Bloom bits of x set in the report, ties uniform | none (empirical only) |

Caveat for MSS: the table's guess is SPEC §4's. The exact maximum-likelihood guess is uniform
over the union of the residue classes of Z, which is the same thing only when every class of
block j has the same size (m_j | k). Otherwise the two differ slightly, and we keep SPEC's guess
because its closed form is the one the spec states. The tests check every other closed form
against an enumerated Bayes optimum.

Dispatch is by protocol id through ``ATTACKS``; an unknown id raises ``ValueError`` listing the
valid ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from privfreq.protocols.base import FrequencyProtocol, ReportBatch

__all__ = [
    "ATTACKS",
    "Attack",
    "attack",
    "closed_form_asr",
    "closed_form_kind",
    "empirical_asr",
    "mss_asr_approx",
]

# Elements of a (reports × domain) temporary per chunk: 2^22 int32/float64 = 16–32 MiB.
CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class Attack:
    """The Bayes attacker of one protocol and, where known, its closed-form success rate.

    ``guess(protocol, batch, rng) -> int64[n]``; ``closed_form(protocol, f) -> float`` with ``f``
    the distribution of the users' items (``None``: uniform); ``kind`` says how exact it is:
    ``"exact"``, ``"approx"`` or ``"none"``.
    """

    guess: Callable[[FrequencyProtocol, ReportBatch, np.random.Generator], np.ndarray]
    closed_form: Callable[[FrequencyProtocol, np.ndarray | None], float] | None
    kind: str


# ----- shared helpers ----------------------------------------------------------------------------
def _pick_uniform(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per row of a boolean ``[n, d]`` mask, the column of a uniform True entry (-1 if none)."""
    cnt = mask.sum(axis=1)
    t = np.floor(rng.random(len(mask)) * cnt).astype(np.int64)
    cs = np.cumsum(mask, axis=1, dtype=np.int32)
    idx = (cs <= t[:, None]).sum(axis=1)
    return np.where(cnt > 0, idx, -1)


def _fill_uniform(guess: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Replace -1 (empty candidate set) by a uniform item of [k] (the prior's guess)."""
    empty = guess < 0
    guess[empty] = rng.integers(0, k, int(empty.sum()))
    return guess


def _chunked(n: int, width: int):
    step = max(1, CHUNK_ELEMENTS // max(1, width))
    for lo in range(0, n, step):
        yield slice(lo, min(n, lo + step))


def _mask_attack(protocol, batch, rng, mask_fn) -> np.ndarray:
    """Uniform member of the candidate set ``mask_fn(rows) -> bool[len(rows), k]``."""
    n, k = len(batch), protocol.k
    out = np.empty(n, dtype=np.int64)
    for sl in _chunked(n, k):
        out[sl] = _pick_uniform(mask_fn(sl), rng)
    return _fill_uniform(out, k, rng)


def _f_or_uniform(protocol, f) -> np.ndarray:
    if f is None:
        return np.full(protocol.k, 1.0 / protocol.k)
    f = np.asarray(f, dtype=np.float64)
    if f.shape != (protocol.k,):
        raise ValueError(f"attacks: f must have shape ({protocol.k},), got {f.shape}")
    return f / f.sum()


# ----- GRR / SS / MSS ----------------------------------------------------------------------------
def _grr_guess(protocol, batch, rng):
    return batch.values[:, 0].astype(np.int64, copy=True)


def _grr_asr(protocol, f):
    return float(protocol.p)


def _ss_guess(protocol, batch, rng):
    n = len(batch)
    col = rng.integers(0, batch.values.shape[1], n)
    return batch.values[np.arange(n), col].astype(np.int64)


def _ss_asr(protocol, f):
    c = protocol.ss
    return c.p / c.omega   # = e^ε/(ω e^ε + k − ω)


def _mss_guess(protocol, batch, rng):
    n, k = len(batch), protocol.k
    moduli = np.array(protocol.moduli, dtype=np.int64)
    omegas = np.array([c.omega for c in protocol.blocks], dtype=np.int64)
    j = batch.block
    col = np.floor(rng.random(n) * omegas[j]).astype(np.int64)
    r = batch.values[np.arange(n), col]
    m = moduli[j]
    size = (k - r + m - 1) // m              # |{x < k : x ≡ r (mod m)}| = ⌈(k − r)/m⌉
    t = np.floor(rng.random(n) * size).astype(np.int64)
    return r + t * m


def _mss_asr(protocol, f):
    f = _f_or_uniform(protocol, f)
    x = np.arange(protocol.k)
    total = 0.0
    for c in protocol.blocks:
        sizes = np.bincount(x % c.m, minlength=c.m)
        total += c.p / c.omega * float(np.sum(f / sizes[x % c.m]))
    return total / protocol.ell


def mss_asr_approx(protocol) -> float:
    """SPEC §4's approximation ``(1/ℓ) Σ_j p_j / (ω_j ⌈k/m_j⌉)`` (data-independent)."""
    return float(np.mean([c.p / (c.omega * math.ceil(protocol.k / c.m)) for c in protocol.blocks]))


# ----- OUE / SUE ----------------------------------------------------------------------------------
def _ue_guess(protocol, batch, rng):
    k = protocol.k

    def mask(sl):
        return np.unpackbits(batch.values[sl], axis=1, count=k, bitorder="little").astype(bool)

    return _mask_attack(protocol, batch, rng, mask)


def _ue_asr(protocol, f):
    k, p, q = protocol.k, protocol.p, protocol.q
    return float(p * -math.expm1(k * math.log1p(-q)) / (k * q)
                 + (1 - p) * math.exp((k - 1) * math.log1p(-q)) / k)


# ----- OLH ----------------------------------------------------------------------------------------
def _olh_guess(protocol, batch, rng):
    items = np.arange(protocol.k)

    def mask(sl):
        return protocol.hash_items(batch.seed[sl], items) == batch.values[sl, :1]

    return _mask_attack(protocol, batch, rng, mask)


def _olh_asr(protocol, f):
    g, k = protocol.g, protocol.k
    return float(protocol.p * g * -math.expm1(k * math.log1p(-1.0 / g)) / k)


# ----- Hadamard response ------------------------------------------------------------------------------
def _hr_parts(protocol):
    """Rows ``r ∈ [1, K)`` as an array, and which (block, row) pairs are real items (x < k)."""
    big_k, b = protocol.n_hadamard, protocol.blocks
    r = np.arange(1, big_k, dtype=np.int64)
    blk = np.arange(b, dtype=np.int64)
    valid = (r[None, :] - 1) * b + blk[:, None] < protocol.k      # [B, K−1]
    return r, valid


def _hr_guess(protocol, batch, rng):
    big_k, b = protocol.n_hadamard, protocol.blocks
    r, valid = _hr_parts(protocol)
    y = batch.values[:, 0]
    blk, col = y // big_k, y % big_k
    n = len(batch)
    out = np.empty(n, dtype=np.int64)
    for sl in _chunked(n, big_k):
        even = (np.bitwise_count(r[None, :] & col[sl, None]) & 1) == 0
        pick = _pick_uniform(even & valid[blk[sl]], rng)               # index into r
        out[sl] = np.where(pick >= 0, pick * b + blk[sl], -1)          # x = (r−1)·B + j
    return _fill_uniform(out, protocol.k, rng)


def _hr_asr(protocol, f):
    from privfreq.protocols.hadamard import fwht
    f = _f_or_uniform(protocol, f)
    big_k, b, k = protocol.n_hadamard, protocol.blocks, protocol.k
    ind = np.zeros((b, big_k))
    _, valid = _hr_parts(protocol)
    ind[:, 1:] = valid
    # cnt[j, c] = #{real rows r of block j with popcount(r & c) even} = (|R_j| + WHT(1_R_j)[c])/2
    cnt = np.rint((ind.sum(axis=1, keepdims=True) + fwht(ind)) / 2)
    g = np.divide(1.0, cnt, out=np.zeros_like(cnt), where=cnt > 0)
    # Σ_{c : popcount(r & c) even} g[j, c] = (Σ_c g[j, c] + WHT(g_j)[r]) / 2
    even_sum = (g.sum(axis=1, keepdims=True) + fwht(g)) / 2
    j, r = protocol.block_and_row(np.arange(k))
    hit = protocol.p_in * (2.0 / big_k) * even_sum[j, r]
    empty = float((cnt == 0).sum())        # outputs with no candidate: guess uniform over [k]
    p_out = (1 - protocol.p_in) / (b * big_k - big_k / 2)
    return float(np.sum(f * hit) + p_out * empty / k)


# ----- PGR ----------------------------------------------------------------------------------------
def _pgr_guess(protocol, batch, rng):
    geo = protocol.geometry
    q = protocol.q
    d = geo.digits(np.arange(protocol.k)).astype(np.float64)     # [k, t]; dot products < q²t
    u = geo.digits(batch.values[:, 0]).astype(np.float64)        # exact in float64

    def mask(sl):
        return np.fmod(u[sl] @ d.T, q) == 0

    return _mask_attack(protocol, batch, rng, mask)


def _pgr_asr(protocol, f):
    f = _f_or_uniform(protocol, f)
    geo = protocol.geometry
    ind = np.zeros(protocol.K)
    ind[:protocol.k] = 1.0
    cnt = np.rint(geo.support_sums(ind))              # |S_u ∩ [k]| for every output u
    g = np.divide(1.0, cnt, out=np.zeros_like(cnt), where=cnt > 0)
    inside = geo.support_sums(g)[:protocol.k]         # Σ_{u ∈ S_x} 1/|S_u ∩ [k]|
    e = math.exp(protocol.epsilon)
    empty = float((cnt == 0).sum())
    return float(e * protocol.P * np.sum(f * inside) + protocol.P * empty / protocol.k)


# ----- RAPPOR -------------------------------------------------------------------------------------
def _rappor_guess(protocol, batch, rng):
    """MAP: bits are independent given x with P(S_i=1) = q* on x's Bloom bits and p* elsewhere, so
    the log-likelihood is ``a·ones + b·zeros`` over x's distinct Bloom bits, a = log(q*/p*),
    b = log((1−q*)/(1−p*))."""
    bloom = protocol.bloom                       # [C, k, h]
    k, h = protocol.k, protocol.hashes
    qs, ps = protocol.q_star, protocol.p_star
    a, b = math.log(qs / ps), math.log((1 - qs) / (1 - ps))
    # Distinct-bit flags per (cohort, item, hash): hash i counts unless an earlier hash hit its bit.
    distinct = np.ones(bloom.shape, dtype=bool)
    for i in range(1, h):
        distinct[:, :, i] = ~(bloom[:, :, :i] == bloom[:, :, i:i + 1]).any(axis=2)
    n = len(batch)
    out = np.empty(n, dtype=np.int64)
    for sl in _chunked(n, k * h):
        bits = np.unpackbits(batch.values[sl], axis=1, count=protocol.bloom_bits,
                             bitorder="little").astype(bool)
        c = batch.block[sl]
        rows = np.arange(len(bits))[:, None, None]
        s = bits[rows, bloom[c]] & distinct[c]                    # [rows, k, h]
        ones = s.sum(axis=2)
        size = distinct[c].sum(axis=2)
        score = a * ones + b * (size - ones)
        best = np.isclose(score, score.max(axis=1, keepdims=True), rtol=0, atol=1e-9)
        out[sl] = _pick_uniform(best, rng)
    return out


# ----- registry -----------------------------------------------------------------------------------
ATTACKS: dict[str, Attack] = {
    "grr": Attack(_grr_guess, _grr_asr, "exact"),
    "ss": Attack(_ss_guess, _ss_asr, "exact"),
    "mss": Attack(_mss_guess, _mss_asr, "exact"),
    "oue": Attack(_ue_guess, _ue_asr, "exact"),
    "sue": Attack(_ue_guess, _ue_asr, "exact"),
    "olh": Attack(_olh_guess, _olh_asr, "approx"),
    "hr": Attack(_hr_guess, _hr_asr, "exact"),
    "pgr": Attack(_pgr_guess, _pgr_asr, "exact"),
    "rappor": Attack(_rappor_guess, None, "none"),
}


def _get(protocol_id: str) -> Attack:
    try:
        return ATTACKS[protocol_id]
    except KeyError:
        raise ValueError(f"attacks: no attack for protocol id {protocol_id!r}; valid ids are "
                         f"{sorted(ATTACKS)}") from None


def attack(protocol: FrequencyProtocol, batch: ReportBatch,
           rng: np.random.Generator) -> np.ndarray:
    """The Bayes attacker's guess (int64[n], items in [0, k)) for every report of ``batch``."""
    return _get(protocol.protocol_id).guess(protocol, batch, rng)


def empirical_asr(protocol: FrequencyProtocol, batch: ReportBatch, items: np.ndarray,
                  rng: np.random.Generator) -> float:
    """Fraction of reports whose guess equals the user's true item."""
    if len(batch) == 0:
        return math.nan
    return float(np.mean(attack(protocol, batch, rng) == np.asarray(items)))


def closed_form_asr(protocol: FrequencyProtocol, f: np.ndarray | None = None) -> float:
    """Closed-form ASR of the attacker when users' items follow ``f`` (None: uniform); NaN when
    the protocol has none (``closed_form_kind`` says which are exact)."""
    a = _get(protocol.protocol_id)
    return math.nan if a.closed_form is None else float(a.closed_form(protocol, f))


def closed_form_kind(protocol_id: str) -> str:
    """``"exact"``, ``"approx"`` or ``"none"``."""
    return _get(protocol_id).kind
