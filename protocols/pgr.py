"""ProjectiveGeometryResponse (PGR)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from privfreq.protocols.attacks import f_or_uniform, mask_attack
from privfreq.protocols.base import (Counts, ReportBatch, SupportCounting, register_protocol,
                                     set_fields)
from privfreq.protocols.wire import IndexHistogram

__all__ = ["ProjectiveGeometryResponse", "smallest_prime_at_least"]

MAX_K = 1 << 32            # indices must fit the 4-byte wire encoding
NAIVE_LIMIT = 1 << 13      # the naive O(K²/q) oracle materialises K·cset indices


def smallest_prime_at_least(m: int) -> int:
    """The smallest prime ``>= max(m, 2)`` (trial division; m is at most a few thousand here)."""
    c = max(2, m)
    while any(c % d == 0 for d in range(2, math.isqrt(c) + 1)):
        c += 1
    return c


class Geometry:
    """Tables of the projective space PG(t−1, q): canonical vectors and the hyperplane-sum maps.

    Canonical vectors (first nonzero coordinate 1) are ordered by their base-q value
    ``V(u) = Σ_i u_i q^{t−1−i}`` (coordinate 0 most significant); index
    ``idx = (q^m − 1)/(q − 1) + V − q^m`` where ``m`` is the number of coordinates after the leading
    1. Items ``0..K1−1`` (``K1 = (q^{t−1}−1)/(q−1)``) have ``u_0 = 0``; items ``K1..K−1`` are
    ``(1, w)`` with ``w`` running over ``F_q^{t−1}`` in base-q order.
    """

    def __init__(self, q: int, t: int):
        self.q, self.t = q, t
        self.K = (q**t - 1) // (q - 1)
        self.Q = q ** (t - 1)                      # size of F_q^{t−1}
        self.K1 = (self.Q - 1) // (q - 1)
        self.pow = q ** np.arange(t - 1, -1, -1, dtype=np.int64)   # place values, coordinate 0 first
        self.offsets = np.array([(q**m - 1) // (q - 1) for m in range(t + 1)], dtype=np.int64)
        self.inv = np.zeros(q, dtype=np.int64)
        self.inv[1:] = [pow(a, q - 2, q) for a in range(1, q)]   # Fermat inverses in F_q
        # Digits of every vector of F_q^{t−1} (rows in base-q order): int64[Q, t−1].
        r = np.arange(self.Q, dtype=np.int64)
        self.rest_digits = (r[:, None] // self.pow[1:][None, :]) % q
        # Flat positions in F_q^{t−1} of every nonzero multiple λ·u of the canonical u with
        # u_0 = 0 (items < K1): int64[q−1, K1]. Slice 0 of the projectively replicated histogram.
        d0 = self.digits(np.arange(self.K1))[:, 1:]
        lam = np.arange(1, q, dtype=np.int64)[:, None, None]
        self.orbit0 = ((lam * d0[None]) % q) @ self.pow[1:]

    def value(self, idx) -> np.ndarray:
        """Base-q value V of canonical vectors given their indices."""
        idx = np.asarray(idx, dtype=np.int64)
        m = np.searchsorted(self.offsets, idx, side="right") - 1
        return self.pow[::-1][m] + idx - self.offsets[m]

    def digits(self, idx) -> np.ndarray:
        """``int64[n, t]`` coordinates of canonical vectors given their indices."""
        v = self.value(idx)
        return (v[:, None] // self.pow[None, :]) % self.q

    def index_of(self, u: np.ndarray) -> np.ndarray:
        """Index of the projective point of nonzero vectors ``u`` (int64[n, t]): scale the first
        nonzero coordinate to 1, then invert :meth:`value`."""
        nz = u != 0
        lead = nz.argmax(axis=1)
        a = u[np.arange(len(u)), lead]
        canon = (u * self.inv[a][:, None]) % self.q
        v = canon @ self.pow
        m = self.t - 1 - lead
        return self.offsets[m] + v - self.pow[::-1][m]

    def support_sums(self, y: np.ndarray) -> np.ndarray:
        """``T[v] = Σ_{u ∈ S_v} y_u`` for every canonical v (float64[K]), in O(K·q·t) time and
        O(K) memory.

        Let ``Y`` be ``y`` replicated on all nonzero multiples of each point. Its q-ary Fourier
        transform ``Ŷ(v) = Σ_u Y(u) ω^{⟨u,v⟩}`` equals ``q·T[v] − Σy`` (each point's q−1 multiples
        contribute ``q−1`` if ``⟨u,v⟩ = 0`` and ``Σ_{c≠0} ω^c = −1`` otherwise). Split on the first
        coordinate: ``Ŷ(v_0, w) = G0(w) + Σ_{a=1}^{q−1} ω^{a v_0} G1(a·w)`` where ``G0``, ``G1`` are
        the (t−1)-dimensional transforms of slices ``u_0 = 0`` and ``u_0 = 1`` (slice a is slice 1
        rescaled, whence ``G1(a·w)``). Canonical v have ``v_0 ∈ {0, 1}``, so two FFTs of size
        ``q^{t−1}`` and ``q−1`` gathers of ``q^{t−1}`` entries (each O(t) index arithmetic) suffice.
        """
        q, t = self.q, self.t
        y = np.asarray(y, dtype=np.float64)
        s0 = np.zeros(self.Q)
        s0[self.orbit0.ravel()] = np.broadcast_to(y[:self.K1], self.orbit0.shape).ravel()
        shape = (q,) * (t - 1)
        g0 = np.fft.fftn(s0.reshape(shape)).ravel()
        g1 = np.fft.fftn(y[self.K1:].reshape(shape)).ravel()
        f0 = g0.copy()              # Ŷ(0, w)
        f1 = g0.copy()              # Ŷ(1, w)
        omega = np.exp(-2j * np.pi * np.arange(q) / q)          # numpy's fft sign convention
        for a in range(1, q):
            g = g1[((a * self.rest_digits) % q) @ self.pow[1:]]
            f0 += g
            f1 += omega[a] * g
        vals = self.value(np.arange(self.K))
        first = vals // self.Q
        rest = vals % self.Q
        yhat = np.where(first == 1, f1[rest], f0[rest]).real
        return (yhat + y.sum()) / q

    def support_members(self) -> np.ndarray:
        """``int64[K, cset]``: the members of every ``S_v`` (dense O(K²) build; small K only)."""
        d = self.digits(np.arange(self.K))
        inside = (d @ d.T) % self.q == 0
        cset = (self.Q - 1) // (self.q - 1)
        return np.nonzero(inside)[1].reshape(self.K, cset)


@register_protocol("pgr")
@dataclass(frozen=True)
class ProjectiveGeometryResponse(IndexHistogram, SupportCounting):
    """ProjectiveGeometryResponse (Feldman, Nelson, Nguyen, Talwar, "Private Frequency Estimation
    via Projective Geometry", ICML 2022), exactly as SPEC §3.

    Geometry: q is the smallest prime ``>= ⌈e^ε + 1⌉``; t >= 2 the smallest with
    ``K = (q^t−1)/(q−1) >= k``. Items are the canonical nonzero vectors of ``F_q^t`` (first nonzero
    coordinate 1), indexed 0..K−1 (see ``Geometry``); items ``>= k`` are padding, valid as outputs
    but never estimated. ``S_v = {u : ⟨u,v⟩ = 0}``, ``|S_v| = cset = (q^{t−1}−1)/(q−1)``,
    ``|S_u ∩ S_v| = cint = (q^{t−2}−1)/(q−1)``.

    Distribution: output ``u ∈ [K]`` w.p. ``e^ε·P`` if ``u ∈ S_x``, else ``P``, with
    ``P = 1/((e^ε−1)·cset + K)``; likelihood ratio e^ε (tight). Sampled in O(t) per report: decide
    ``u ∈ S_x`` w.p. ``s = e^ε·P·cset``, then draw a uniform nonzero vector with ``⟨u,x⟩ = 0`` (resp.
    ``⟨u,x⟩`` uniform in ``F_q∖{0}``) by fixing x's leading coordinate, and canonicalise it.

    Estimator: ``T[v] = Σ_{u∈S_v} y_u`` (y the histogram of reports),
    ``f̂_v = (T[v]/n − r)/(s − r)`` with ``s = e^ε·P·cset``, ``r = P·((e^ε−1)·cint + cset)``.
    Decoding: ``Geometry.support_sums`` (O(K·q·t) time, O(K) memory; the naive O(K²/q) sum over the
    members of every S_v is kept as ``naive_support_sums``, the test oracle).
    Variance: ``[r(1−r) + f_v (s−r)(1−s−r)]/(n (s−r)²)``. Payload: the index as a little-endian
    integer of ``wire.index_width(K)`` bytes.
    Attack: a uniform member of ``S_u ∩ [k]``; exact ASR given f via two support-sum transforms.
    """

    display_name = "PGR"
    asr_kind = "exact"
    transient = ("geometry",)
    k: int
    epsilon: float
    q: int = field(init=False, repr=False)
    t: int = field(init=False, repr=False)
    K: int = field(init=False, repr=False)
    cset: int = field(init=False, repr=False)
    cint: int = field(init=False, repr=False)
    P: float = field(init=False, repr=False)
    s: float = field(init=False, repr=False)
    r: float = field(init=False, repr=False)

    def __post_init__(self):
        self.check_k_epsilon("PGR", MAX_K)
        if self.epsilon > 15:
            raise ValueError(f"PGR: epsilon must be <= 15 (q grows like e^ε), got {self.epsilon}")
        e = math.exp(self.epsilon)
        q = smallest_prime_at_least(math.ceil(e + 1))
        t = 2
        while (q**t - 1) // (q - 1) < self.k:
            t += 1
        K = (q**t - 1) // (q - 1)
        if K > MAX_K:
            raise ValueError(f"PGR: K = {K} exceeds {MAX_K} for k = {self.k}, ε = {self.epsilon}")
        cset = (q ** (t - 1) - 1) // (q - 1)
        cint = (q ** (t - 2) - 1) // (q - 1)
        P = 1.0 / ((e - 1) * cset + K)
        set_fields(self, q=q, t=t, K=K, cset=cset, cint=cint, P=P, s=e * P * cset,
                   r=P * ((e - 1) * cint + cset))

    @cached_property
    def geometry(self) -> Geometry:
        return Geometry(self.q, self.t)

    def support_probabilities(self):
        return self.s, self.r

    # ----- client ------------------------------------------------------------------------------
    def randomize(self, items, rng):
        x = self.check_items(items)
        n = len(x)
        q, t = self.q, self.t
        geo = self.geometry
        v = geo.digits(x)
        lead = (v != 0).argmax(axis=1)           # v[lead] == 1
        inside = rng.random(n) < self.s
        target = np.where(inside, 0, rng.integers(1, q, n))
        u = rng.integers(0, q, (n, t))
        rows = np.arange(n)

        def fix(idx):
            # choose u[lead] so that <u, v> = target (v[lead] = 1)
            uu = u[idx]
            uu[np.arange(len(idx)), lead[idx]] = 0
            dot = (uu * v[idx]).sum(axis=1)
            uu[np.arange(len(idx)), lead[idx]] = (target[idx] - dot) % q
            u[idx] = uu

        fix(rows)
        zero = np.nonzero(~u.any(axis=1))[0]     # only possible inside S_x: redraw
        while len(zero):
            u[zero] = rng.integers(0, q, (len(zero), t))
            fix(zero)
            zero = zero[~u[zero].any(axis=1)]
        y = geo.index_of(u)
        return ReportBatch(np.zeros(n, np.int64), np.zeros(n, np.int64), y[:, None])

    # ----- wire --------------------------------------------------------------------------------
    @property
    def output_size(self):
        return self.K

    def information_bits(self):
        return math.ceil(math.log2(self.K))

    # ----- server ------------------------------------------------------------------------------
    def support_sums(self, acc: Counts) -> np.ndarray:
        """``T[v]`` for the k real items (exact integers, from the fast decoder)."""
        return np.rint(self.geometry.support_sums(acc.counts)[:self.k]).astype(np.int64)

    def naive_support_sums(self, acc: Counts) -> np.ndarray:
        """The O(K²/q) oracle: sum the histogram over the cset members of each S_v."""
        if self.K > NAIVE_LIMIT:
            raise ValueError(f"PGR: the naive decoder is a test oracle for K <= {NAIVE_LIMIT}, "
                             f"got K = {self.K}")
        return acc.counts[self.geometry.support_members()[:self.k]].sum(axis=1)

    def support_counts(self, acc: Counts) -> np.ndarray:
        return self.support_sums(acc)

    def diagnostics(self):
        return {"q": self.q, "t": self.t, "K": self.K}

    def attack(self, batch, rng):
        geo = self.geometry
        d = geo.digits(np.arange(self.k)).astype(np.float64)     # [k, t]; dot products < q²t
        u = geo.digits(batch.values[:, 0]).astype(np.float64)    # exact in float64
        return mask_attack(self, batch, rng, lambda sl: np.fmod(u[sl] @ d.T, self.q) == 0)

    def closed_form_asr(self, f=None):
        f = f_or_uniform(self, f)
        geo = self.geometry
        ind = np.zeros(self.K)
        ind[:self.k] = 1.0
        cnt = np.rint(geo.support_sums(ind))              # |S_u ∩ [k]| for every output u
        g = np.divide(1.0, cnt, out=np.zeros_like(cnt), where=cnt > 0)
        inside = geo.support_sums(g)[:self.k]             # Σ_{u ∈ S_x} 1/|S_u ∩ [k]|
        e = math.exp(self.epsilon)
        empty = float((cnt == 0).sum())
        return float(e * self.P * np.sum(f * inside) + self.P * empty / self.k)

    def output_distribution(self, item):
        """Exact ``P(u | item)`` over ``[K]``."""
        d = self.geometry.digits(np.arange(self.K))
        inside = (d @ d[item]) % self.q == 0
        probs = np.where(inside, math.exp(self.epsilon) * self.P, self.P)
        return dict(zip(range(self.K), probs.tolist()))
