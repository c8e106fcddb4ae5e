"""Seed-compressed Subset Selection (SPEC §10): the report is a PRG seed whose expansion is the
subset. Privacy is COMPUTATIONAL: ε-LDP only against an adversary who cannot tell the PRG's
subsets from uniform ones.

Feldman & Talwar, "Lossless Compression of Efficient Private Local Randomizers", ICML 2021 (rejection
sampling over PRG seeds); SS: Ye & Barg 2018, Wang et al. 2016.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from privfreq.protocols.base import (Counts, PureSupport, Reason, ReportBatch, register_protocol,
                                     set_fields)
from privfreq.protocols.hashing import hash_to_range, item_offsets, seed_state
from privfreq.protocols.subset_selection import ss_constants

__all__ = ["CompressedSubsetSelection", "SeedPayloads", "expand_seeds", "rejection_trials"]

SEED_BOUND = 1 << 63            # seeds are uniform in [0, 2^63): the report's 8 payload bytes
# Rejection trials before the fallback to one fresh uniform seed: the fallback's weight ρ^T is at
# most 2^-TAIL_LOG2 (it is folded exactly into p and q anyway, so this only bounds client work).
TAIL_LOG2 = 20
# Subset values expanded at once on the server (int64 temporaries: 32 MiB).
CHUNK_VALUES = 1 << 22


def expand_seeds(seeds, k: int, omega: int) -> np.ndarray:
    """The PRG: ``int64[n, ω]`` sorted ω-subsets of [k], one per seed: the first ω distinct values
    of the hash stream ``H_s(0), H_s(1), ...`` (SplitMix64, multiply-shift onto [k]; the first ω
    distinct values of an iid uniform stream are a uniform ω-subset, so a PRG indistinguishable
    from random gives subsets indistinguishable from uniform). O(L log L) per seed with L ≈
    ``k·ln(k/(k−ω))`` draws (≈ ω for ω << k)."""
    if k >= 1 << 32:
        raise ValueError(f"expand_seeds: k must be < 2^32, got {k}")
    seeds = np.asarray(seeds, dtype=np.int64)
    n = len(seeds)
    out = np.empty((n, omega), dtype=np.int64)
    if n == 0:
        return out
    need = omega + 8
    if omega < k:
        need = int(1.1 * k * math.log(k / (k - omega + 0.5))) + 16
    state = seed_state(seeds)
    todo = np.arange(n)
    draws = max(need, omega)
    while len(todo):
        h = hash_to_range(state[todo][:, None], item_offsets(np.arange(draws))[None, :], k)
        order = np.argsort(h, axis=1, kind="stable")       # first occurrence first among equals
        hs = np.take_along_axis(h, order, axis=1)
        first = np.ones_like(hs, dtype=bool)
        first[:, 1:] = hs[:, 1:] != hs[:, :-1]
        # position in the stream of every first occurrence; keep the ω earliest
        pos = np.where(first, order, draws)
        pos.sort(axis=1)
        ok = pos[:, omega - 1] < draws
        rows = todo[ok]
        if len(rows):
            sel = pos[ok, :omega]
            vals = np.take_along_axis(h[ok], sel, axis=1)
            vals.sort(axis=1)
            out[rows] = vals
        todo = todo[~ok]
        draws *= 2
    return out


def rejection_trials(m: int, omega: int, epsilon: float) -> tuple[int, float, float]:
    """``(T, ρ, ρ^T)`` of the rejection sampler on [m]: one trial accepts with probability
    ``ω/m + (1 − ω/m)e^{−ε}`` whatever the input, T trials bound the fallback weight ``ρ^T``
    by ``2^−TAIL_LOG2``."""
    accept = omega / m + (1 - omega / m) * math.exp(-epsilon)
    rho = 1 - accept
    trials = 1 if rho <= 0 else max(1, math.ceil(TAIL_LOG2 * math.log(2) / -math.log(rho)))
    return trials, rho, rho ** trials


class SeedPayloads:
    """Wire format of the seed-compressed protocols: one 8-byte seed per report
    (``values[:, 0]``, int64 in [0, 2^63))."""

    def payload_width(self, block):
        return 8

    def encode_payloads(self, block, values):
        """The seed as 8 little-endian bytes."""
        return np.ascontiguousarray(values[:, :1].astype("<i8")).view(np.uint8).reshape(-1, 8)

    def decode_payloads(self, block, raw):
        """8 bytes → the seed; ``BAD_SEED`` if the top bit is set (seeds are < 2^63)."""
        raw = np.ascontiguousarray(raw, dtype=np.uint8)
        reason = np.zeros(len(raw), dtype=np.int64)
        if raw.ndim != 2 or raw.shape[1] != 8:
            reason[:] = Reason.BAD_LENGTH
            return np.zeros((len(raw), 1), dtype=np.int64), reason
        values = raw.view("<i8").astype(np.int64)
        reason[values[:, 0] < 0] = Reason.BAD_SEED
        return values, reason


@register_protocol("css")
@dataclass(frozen=True)
class CompressedSubsetSelection(SeedPayloads, PureSupport):
    """Seed-compressed SS on [k] (privacy: computational).

    Distribution: the client draws seeds s uniformly and expands ``Z = G(s)`` (``expand_seeds``,
    a uniform ω-subset for an ideal PRG, ω as SS's); it accepts s when x ∈ Z, otherwise with
    probability e^{−ε}; after T rejections it sends a fresh seed unconditionally. The accepted Z
    has ``P(Z | x) ∝ e^{ε·[x∈Z]}`` (SS's distribution), mixed with the uniform distribution with
    weight ``ρ^T`` (ρ the rejection probability, the same for every x), so it stays ε-LDP and
    ``p = (1−ρ^T)·p_SS + ρ^T·ω/k``, ``q = (1−ρ^T)·q_SS + ρ^T·ω/k`` exactly. Expected trials
    ``k·e^ε/(ωe^ε + k − ω)`` ≈ (e^ε+1)/2.
    Estimator ``f̂_x = (C_x/n − q)/(p − q)`` after the server expands each seed (O(ω) values);
    variance at f_x = 0 ``q(1−q)/(n(p−q)²)``. Message: the 8-byte seed. Attack: a uniform member
    of G(s); ASR ``p/ω``. Privacy holds only against an adversary who cannot break the PRG:
    ``privacy_kind = "computational"`` (reported in diagnostics, config notes, plan and docs).
    """

    display_name = "SS-seed"
    asr_kind = "exact"
    privacy_kind = "computational"
    omega: int = field(init=False, repr=False)
    trials: int = field(init=False, repr=False)
    fallback: float = field(init=False, repr=False)

    def __post_init__(self):
        eps = self.check_k_epsilon("CompressedSS", k_max=2**32 - 1)
        ss = ss_constants(self.k, eps)
        w, k = ss.omega, self.k
        trials, _, mix = rejection_trials(k, w, eps)
        set_fields(self, omega=w, trials=trials, fallback=mix)
        self.set_support((1 - mix) * ss.p + mix * w / k, (1 - mix) * ss.q + mix * w / k)

    @property
    def values_width(self):
        return 1

    def randomize(self, items, rng, source=None):
        """Seeds (``values[:, 0]``, int64 in [0, 2^63)). ``source(seeds)`` replaces the PRG
        expansion (tests: a true random source)."""
        x = self.check_items(items)
        n = len(x)
        expand = source if source is not None else (lambda s: expand_seeds(s, self.k, self.omega))
        out = np.empty(n, dtype=np.int64)
        todo = np.arange(n)
        thresh = math.exp(-self.epsilon)
        for _ in range(self.trials):
            if not len(todo):
                break
            s = rng.integers(0, SEED_BOUND, len(todo), dtype=np.int64)
            z = expand(s)
            hit = (z == x[todo][:, None]).any(axis=1)
            acc = hit | (rng.random(len(todo)) < thresh)
            out[todo[acc]] = s[acc]
            todo = todo[~acc]
        if len(todo):
            out[todo] = rng.integers(0, SEED_BOUND, len(todo), dtype=np.int64)
        return ReportBatch(np.zeros(n, np.int64), np.zeros(n, np.int64), out[:, None])

    def information_bits(self):
        return 63

    def count_shape(self):
        return (self.k,)

    def add_reports(self, acc: Counts, batch: ReportBatch) -> Counts:
        step = max(1, CHUNK_VALUES // max(1, 4 * self.omega))
        for lo in range(0, len(batch), step):
            z = expand_seeds(batch.values[lo:lo + step, 0], self.k, self.omega)
            acc.counts += np.bincount(z.ravel(), minlength=self.k)
        acc.n_block[0] += len(batch)
        return acc

    def attack(self, batch, rng):
        z = expand_seeds(batch.values[:, 0], self.k, self.omega)
        return z[np.arange(len(z)), rng.integers(0, self.omega, len(z))]

    def closed_form_asr(self, f=None):
        return self.p / self.omega

    def diagnostics(self):
        return {"privacy": "computational", "trials": self.trials, "fallback": self.fallback}
