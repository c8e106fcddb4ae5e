"""Seed-compressed Modular Subset Selection (SPEC §10): MSS whose per-block subset travels as a PRG
seed. Privacy is COMPUTATIONAL: ε-LDP only against an adversary who cannot tell the PRG's subsets
from uniform ones.

Feldman & Talwar, "Lossless Compression of Efficient Private Local Randomizers", ICML 2021 (rejection
sampling over PRG seeds), applied per block of MSS (Arcolezi, AAAI 2026); ``css`` is the ℓ = 1 case
on [k].
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from privfreq.protocols.base import Counts, ReportBatch, register_protocol
from privfreq.protocols.compressed_ss import SEED_BOUND, SeedPayloads, expand_seeds, rejection_trials
from privfreq.protocols.mss import ModularSubsetSelection
from privfreq.protocols.subset_selection import SSConstants

__all__ = ["CompressedModularSubsetSelection", "rejection_trials"]

# Subset values expanded at once (client trials and server counting; int64 temporaries).
CHUNK_VALUES = 1 << 22


def _stream_len(m: int, omega: int) -> int:
    return omega + 8 if omega >= m else int(1.1 * m * math.log(m / (m - omega + 0.5))) + 16


@register_protocol("cmss")
@dataclass(frozen=True)
class CompressedModularSubsetSelection(SeedPayloads, ModularSubsetSelection):
    """Seed-compressed MSS (privacy: computational).

    Distribution: the client draws the block ``j`` uniformly from [ℓ] (independent of x), writes
    ``r = x mod m_j``, then draws seeds s uniformly and expands ``Z = G_j(s)`` (``expand_seeds(s,
    m_j, ω_j)``, a uniform ω_j-subset of [m_j] for an ideal PRG); it accepts s when r ∈ Z, otherwise
    with probability e^{−ε}; after T_j rejections it sends a fresh seed unconditionally. The report
    is ``(j, s)``. The accepted Z has ``P(Z | r) ∝ e^{ε·[r∈Z]}`` (MSS's block distribution) mixed
    with the uniform one with weight ``ρ_j^{T_j}`` (the same for every r), so it stays ε-LDP and
    block j's constants are ``p_j = (1−ρ^T)·p_SS + ρ^T·ω_j/m_j``, likewise q_j, exactly; the mixture
    is still "r in Z or not, the rest uniform", so MSS's covariance (which depends on m, ω, p
    only) and decoder apply unchanged with these constants.
    Server: expands each seed (O(ω_j) values) and counts as MSS. Message: ``j`` in the report's
    block field plus the 8-byte seed. Attack: MSS's (r uniform in G_j(s), x uniform in its residue
    class); ASR as MSS's with the mixed p_j. ``moduli`` defaults to the planner's least-MSE pick.
    """

    display_name = "MSS-seed"
    asr_kind = "exact"
    privacy_kind = "computational"

    moduli: tuple[int, ...] = None            # type: ignore[assignment]
    trials: tuple[int, ...] = field(init=False, repr=False)
    fallback: tuple[float, ...] = field(init=False, repr=False)

    def __post_init__(self):
        if self.moduli is None:
            from privfreq.protocols.planner import plan
            object.__setattr__(self, "moduli", tuple(plan(int(self.k), float(self.epsilon),
                                                          top=1)[0].moduli))
        super().__post_init__()
        blocks, trials, mixes = [], [], []
        for c in self.blocks:
            t, _, mix = rejection_trials(c.m, c.omega, self.epsilon)
            u = c.omega / c.m
            blocks.append(SSConstants(c.m, c.omega, (1 - mix) * c.p + mix * u,
                                      (1 - mix) * c.q + mix * u))
            trials.append(t)
            mixes.append(mix)
        object.__setattr__(self, "blocks", tuple(blocks))
        object.__setattr__(self, "trials", tuple(trials))
        object.__setattr__(self, "fallback", tuple(mixes))

    @property
    def values_width(self):
        return 1

    # ----- client ------------------------------------------------------------------------------
    def randomize(self, items, rng, source=None):
        """Reports ``(j, seed)``: seeds in ``values[:, 0]`` (int64 in [0, 2^63)). ``source(seeds,
        m, ω)`` replaces the PRG expansion (tests: a true random source)."""
        x = self.check_items(items)
        n = len(x)
        expand = source if source is not None else expand_seeds
        j = rng.integers(0, self.ell, n)
        out = np.empty(n, dtype=np.int64)
        thresh = math.exp(-self.epsilon)
        for b, c in enumerate(self.blocks):
            rows = np.flatnonzero(j == b)
            if not len(rows):
                continue
            r = x[rows] % c.m
            step = max(1, CHUNK_VALUES // max(1, 4 * _stream_len(c.m, c.omega)))
            todo = np.arange(len(rows))
            for _ in range(self.trials[b]):
                if not len(todo):
                    break
                s = rng.integers(0, SEED_BOUND, len(todo), dtype=np.int64)
                hit = np.empty(len(todo), dtype=bool)
                for lo in range(0, len(todo), step):
                    z = expand(s[lo:lo + step], c.m, c.omega)
                    hit[lo:lo + step] = (z == r[todo[lo:lo + step]][:, None]).any(axis=1)
                acc = hit | (rng.random(len(todo)) < thresh)
                out[rows[todo[acc]]] = s[acc]
                todo = todo[~acc]
            if len(todo):
                out[rows[todo]] = rng.integers(0, SEED_BOUND, len(todo), dtype=np.int64)
        return ReportBatch(j.astype(np.int64), np.zeros(n, np.int64), out[:, None])

    # ----- wire --------------------------------------------------------------------------------
    @classmethod
    def min_report_bytes(cls, k: int, epsilon: float) -> float:
        """A report is one 8-byte seed whatever the moduli."""
        return 8.0

    def information_bits(self):
        """``⌈log2 ℓ⌉ + 63`` (the block and the seed)."""
        return math.ceil(math.log2(self.ell)) + 63

    # ----- server ------------------------------------------------------------------------------
    def expand(self, batch: ReportBatch) -> np.ndarray:
        """``int64[n, ω_max]`` the subsets G_j(s) of the reports, padded with -1 (MSS's values)."""
        n = len(batch)
        out = np.full((n, self.omega_max), -1, dtype=np.int64)
        for b, c in enumerate(self.blocks):
            rows = np.flatnonzero(batch.block == b)
            if len(rows):
                out[rows, :c.omega] = expand_seeds(batch.values[rows, 0], c.m, c.omega)
        return out

    def add_reports(self, acc: Counts, batch: ReportBatch) -> Counts:
        """Expand each seed into its ω_j-subset of [m_j] and count as MSS, per block, in chunks."""
        for b, c in enumerate(self.blocks):
            rows = np.flatnonzero(batch.block == b)
            step = max(1, CHUNK_VALUES // max(1, 4 * _stream_len(c.m, c.omega)))
            lo_bin = int(self.offsets[b])
            for lo in range(0, len(rows), step):
                z = expand_seeds(batch.values[rows[lo:lo + step], 0], c.m, c.omega)
                acc.counts[lo_bin:lo_bin + c.m] += np.bincount(z.ravel(), minlength=c.m)
            acc.n_block[b] += len(rows)
        return acc

    # ----- attacker ------------------------------------------------------------------------------
    def attack(self, batch, rng):
        return super().attack(ReportBatch(batch.block, batch.seed, self.expand(batch)), rng)

    def output_distribution(self, item):
        raise NotImplementedError("cmss: outputs are 63-bit seeds; see the ideal mechanism in tests")

    def estimate(self, acc: Counts, stderr: bool = True):
        """MSS's decode; the diagnostics gain ``privacy: computational``, trials and fallback."""
        est = super().estimate(acc, stderr=stderr)
        est.diagnostics.update(self.diagnostics())
        return est

    def diagnostics(self):
        return {"privacy": "computational", "trials": list(self.trials),
                "fallback": list(self.fallback)}
