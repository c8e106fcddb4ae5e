"""Prefix Extension Method (PEM) for heavy-hitter discovery in universes too large to list.

Wang, Li, Jha, "Locally Differentially Private Heavy Hitter Identification", IEEE TDSC 2019
(arXiv 1708.06674, 2017/2018); SPEC §9.
"""
from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from privfreq.protocols.attacks import mask_attack
from privfreq.protocols.base import (Counts, Estimate, FrequencyProtocol, ReportBatch, check_epsilon,
                                     check_int, register_protocol)
from privfreq.protocols.cms import HCMS
from privfreq.protocols.mss import ModularSubsetSelection
from privfreq.protocols.olh import OLH
from privfreq.protocols.ss_sampler import check_report_memory

__all__ = ["ORACLES", "PEM", "Discovery", "discover"]

# Largest prefix domain 2^len served by OLH: its server hashes every prefix under every report's
# seed (Θ(n_g·2^len)), 1024 keeps that ≈ 10^8 hash evaluations for 10^5 reports per group (~0.3 s);
# longer prefixes go to HCMS, whose sketch answers any candidate list in O(K) per candidate.
OLH_LIMIT = 1 << 10
# Largest prefix domain served by MSS under oracle "mss" (HCMS above it): MSS decodes the whole
# listed domain, and the moduli planner that picks its moduli takes ~3.5 s at 2^10 but 100-190 s at
# 2^12 on the shared 2-core machine. Explicit ``mss_moduli`` skip the planner (limit up to 2^20).
MSS_LIMIT = 1 << 10
# estimate() (the common interface) lists the whole item domain: only for k up to this.
ESTIMATE_LIMIT = 1 << 20
# Level oracles: "auto" = OLH up to olh_limit, HCMS above (the default); "olh" = OLH at every level
# (each 2^len <= olh_limit); "hcms" = HCMS at every level; "mss" = MSS up to mss_limit, HCMS above.
ORACLES = ("auto", "olh", "hcms", "mss")


@functools.lru_cache(maxsize=64)
def planned_moduli(size: int, epsilon: float) -> tuple[int, ...]:
    """The moduli planner's first choice for an MSS on ``[size]`` at ε (``planner.plan``: best
    predicted MSE among ℓ in 2..4; seeded, so the same answer every time; memoised per process)."""
    from privfreq.protocols.planner import best_moduli
    return best_moduli(size, epsilon)


@register_protocol("pem")
@dataclass(frozen=True)
class PEM(FrequencyProtocol):
    """Prefix Extension Method (Wang, Li, Jha 2018).

    Items are integers in ``[0, k)`` read as ``L = bit_length(k−1)``-bit strings (k = 2^64: any
    int64 id viewed as uint64, e.g. ``hashing.item_id`` of a word). With ``G = (L − s)/η`` groups,
    a user joins group g uniformly (the report's block) and reports the prefix of length
    ``len_g = s + (g+1)η`` of its item through a frequency oracle at the full ε, chosen per level by
    ``oracle``: "auto" (default) OLH on ``[2^len_g]`` when ``2^len_g <= olh_limit``, else HCMS
    (K = ``hashes``, m = ``buckets``, hash seed ``hash_seed + g``); "olh" OLH at every level (each
    ``2^len_g <= olh_limit``); "hcms" HCMS at every level; "mss" ModularSubsetSelection on
    ``[2^len_g]`` when ``2^len_g <= mss_limit`` (moduli ``mss_moduli``, one tuple per MSS level in
    level order, default the planner's choice, stored in the config), else HCMS. One report per
    user: ε-LDP (enumeration test).

    Wire blocks: each level's oracle blocks in turn (an MSS level has ℓ blocks, the others one), so
    without MSS levels block = group; ``block_starts[g]`` is group g's first block.

    Server (``discover``): group 0 estimates all ``2^(s+η)`` prefixes; each level keeps the
    ``keep`` largest estimates, extends them by every η-bit suffix and estimates those in the next
    group; the last level's top-N are the heavy hitters. Estimates are fractions of the group's
    reports, i.e. unbiased for the population's fractions (groups are uniform); in counts they
    scale by G (``f̂·n``). Variance of a prefix estimate is the oracle's at ``n_g ≈ n/G`` reports
    (OLH: ``4e^ε/(n_g(e^ε−1)²)``; HCMS: ``(m/(m−1))²(c²−...)/n_g``, ``protocols.cms``; MSS: the
    least-squares covariance, ``protocols.mss``).

    Native report values: the oracle's values in the first columns, padded with -1 to
    ``values_width`` (1 without MSS levels). Accumulator: the groups' oracle counts concatenated
    (int64[Σ sizes]); reports per wire block in ``n_block``; exact merge. ``estimate`` (common
    interface) is the last group's oracle on ``[0, k)`` (k <= 2^20).
    """

    display_name = "PEM"
    # Pipelines decode a PEM collection by ``heavy_hitters`` (the universe may be too large to list).
    discovers: ClassVar[bool] = True
    k: int
    epsilon: float
    step: int = 2
    start_bits: int | None = None
    hashes: int = 256
    buckets: int = 1024
    hash_seed: int = 0
    seed_bits: int = 63
    olh_limit: int = OLH_LIMIT
    oracle: str = "auto"
    mss_limit: int = MSS_LIMIT
    mss_moduli: tuple | None = None
    bits: int = field(init=False, repr=False)
    groups: int = field(init=False, repr=False)
    oracles: tuple = field(init=False, repr=False, compare=False)
    offsets: tuple = field(init=False, repr=False, compare=False)
    block_starts: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        check_int("PEM", "k", self.k, 2, 1 << 64)
        object.__setattr__(self, "epsilon", check_epsilon("PEM", self.epsilon))
        bits = (self.k - 1).bit_length()
        check_int("PEM", "step", self.step, 1, min(bits, 16))
        if self.start_bits is None:
            object.__setattr__(self, "start_bits", (bits - self.step) % self.step)
        check_int("PEM", "start_bits", self.start_bits, 0, bits - self.step)
        if (bits - self.start_bits) % self.step:
            raise ValueError(f"PEM: step ({self.step}) must divide bit length − start_bits "
                             f"({bits} − {self.start_bits})")
        if self.start_bits + self.step > 20:
            raise ValueError(f"PEM: start_bits + step must be <= 20 (level 0 lists 2^(s+η) "
                             f"prefixes), got {self.start_bits + self.step}")
        check_int("PEM", "olh_limit", self.olh_limit, 2, 1 << 20)
        if self.oracle not in ORACLES:
            raise ValueError(f"PEM: oracle must be one of {list(ORACLES)}, got {self.oracle!r}")
        check_int("PEM", "mss_limit", self.mss_limit, 2, ESTIMATE_LIMIT)
        object.__setattr__(self, "bits", bits)
        object.__setattr__(self, "groups", (bits - self.start_bits) // self.step)
        kinds = [self._level_oracle(g) for g in range(self.groups)]
        mss_sizes = [1 << self.prefix_length(g) for g, kind in enumerate(kinds) if kind == "mss"]
        object.__setattr__(self, "mss_moduli", self._check_mss_moduli(mss_sizes))
        mss_moduli = iter(self.mss_moduli or ())
        oracles, offsets, starts, off = [], [], [0], 0
        for g, kind in enumerate(kinds):
            size = 1 << self.prefix_length(g)
            if kind == "olh":
                o = OLH(size, self.epsilon, seed_bits=self.seed_bits)
            elif kind == "mss":
                o = ModularSubsetSelection(size, self.epsilon, next(mss_moduli))
            else:
                o = HCMS(int(min(size, ESTIMATE_LIMIT)), self.epsilon, self.hashes, self.buckets,
                         (self.hash_seed + g) % (1 << 63))
            oracles.append(o)
            offsets.append(off)
            off += int(np.prod(o.count_shape()))
            starts.append(starts[-1] + o.n_blocks)
        object.__setattr__(self, "oracles", tuple(oracles))
        object.__setattr__(self, "offsets", tuple(offsets + [off]))
        object.__setattr__(self, "block_starts", tuple(starts))

    def _level_oracle(self, g: int) -> str:
        """"olh", "hcms" or "mss": the oracle of group g under ``oracle``."""
        size = 1 << self.prefix_length(g)
        if self.oracle == "olh" and size > self.olh_limit:
            raise ValueError(f"PEM: oracle 'olh' needs every level's prefix domain <= olh_limit "
                             f"({self.olh_limit}); level {g} has 2^{self.prefix_length(g)} "
                             f"(raise olh_limit up to 2^20, or use oracle 'auto')")
        if self.oracle in ("auto", "olh"):
            return "olh" if size <= self.olh_limit else "hcms"
        if self.oracle == "mss" and size <= self.mss_limit:
            return "mss"
        return "hcms"

    def _check_mss_moduli(self, sizes: list[int]) -> tuple | None:
        """``mss_moduli`` as a tuple of int tuples, one per MSS level (planned when None)."""
        if self.oracle != "mss":
            if self.mss_moduli is not None:
                raise ValueError(f"PEM: mss_moduli is only used with oracle 'mss', got oracle "
                                 f"{self.oracle!r}")
            return None
        if self.mss_moduli is None:
            return tuple(planned_moduli(size, self.epsilon) for size in sizes)
        try:
            mods = tuple(tuple(int(m) for m in level) for level in self.mss_moduli)
        except (TypeError, ValueError):
            raise ValueError(f"PEM: mss_moduli must be a list of integer lists (one per MSS "
                             f"level), got {self.mss_moduli!r}") from None
        if len(mods) != len(sizes):
            raise ValueError(f"PEM: mss_moduli must give {len(sizes)} moduli lists (MSS levels of "
                             f"prefix domains {sizes}), got {len(mods)}")
        return mods

    def to_params(self):
        out = {"k": self.k, "epsilon": self.epsilon, "step": self.step,
               "start_bits": self.start_bits, "hashes": self.hashes, "buckets": self.buckets,
               "hash_seed": self.hash_seed, "seed_bits": self.seed_bits,
               "olh_limit": self.olh_limit}
        if self.oracle != "auto":   # default configs keep the fingerprints they had before
            out.update(oracle=self.oracle, mss_limit=self.mss_limit)
            if self.mss_moduli is not None:
                out["mss_moduli"] = [list(m) for m in self.mss_moduli]
        return out

    def prefix_length(self, g: int) -> int:
        return self.start_bits + (g + 1) * self.step

    def prefixes(self, items, g: int) -> np.ndarray:
        """The length-``len_g`` prefixes of items (int64; the uint64 bit pattern for L = 64)."""
        u = np.asarray(items, dtype=np.int64).view(np.uint64)
        return (u >> np.uint64(self.bits - self.prefix_length(g))).view(np.int64)

    # ----- shape ---------------------------------------------------------------------------------
    @property
    def n_blocks(self):
        return self.block_starts[-1]

    @property
    def values_width(self):
        return max(o.values_width for o in self.oracles)

    def locate(self, block: int) -> tuple[int, int]:
        """``(group, the group oracle's own block)`` of a wire block."""
        g = bisect.bisect_right(self.block_starts, block) - 1
        return g, block - self.block_starts[g]

    @property
    def uses_seed(self):
        return any(isinstance(o, OLH) for o in self.oracles)

    def seed_bound(self):
        return 1 << self.seed_bits if self.uses_seed else 1

    def block_max_seeds(self):
        """``2^seed_bits − 1`` on OLH levels, 0 on HCMS and MSS levels."""
        return np.array([self.seed_bound() - 1 if isinstance(self.oracles[self.locate(b)[0]], OLH)
                         else 0 for b in range(self.n_blocks)], dtype=np.int64)

    def check_items(self, items):
        items = np.asarray(items)
        if items.ndim != 1 or not np.issubdtype(items.dtype, np.integer):
            raise ValueError(f"PEM: items must be a 1-D integer array, got dtype {items.dtype}")
        if self.bits == 64:
            return items.astype(np.int64, copy=False)
        return super().check_items(items)

    # ----- client --------------------------------------------------------------------------------
    def randomize(self, items, rng):
        x = self.check_items(items)
        n = len(x)
        width = self.values_width
        check_report_memory("PEM", n, width)
        g = rng.integers(0, self.groups, n)
        block = np.zeros(n, np.int64)
        seed = np.zeros(n, np.int64)
        y = np.zeros((n, 1), np.int64) if width == 1 else np.full((n, width), -1, np.int64)
        for j, o in enumerate(self.oracles):
            rows = np.flatnonzero(g == j)
            if not len(rows):
                continue
            b = o.randomize(self.prefixes(x[rows], j), rng)
            block[rows] = self.block_starts[j] + b.block
            seed[rows] = b.seed
            y[rows, :b.values.shape[1]] = b.values
        return ReportBatch(block, seed, y)

    # ----- wire ----------------------------------------------------------------------------------
    def payload_width(self, block):
        g, j = self.locate(block)
        return self.oracles[g].payload_width(j)

    def encode_payloads(self, block, values):
        g, j = self.locate(block)
        o = self.oracles[g]
        return o.encode_payloads(j, np.asarray(values)[:, :o.values_width])

    def decode_payloads(self, block, raw):
        g, j = self.locate(block)
        values, why = self.oracles[g].decode_payloads(j, raw)
        width = self.values_width
        if values.shape[1] != width:    # MSS levels widen every level's values: -1 padding
            padded = np.full((len(values), width), -1, dtype=values.dtype)
            padded[:, :values.shape[1]] = values
            values = padded
        return values, why

    def information_bits(self):
        return float(np.mean([o.information_bits() for o in self.oracles])) + math.log2(self.groups)

    # ----- server --------------------------------------------------------------------------------
    def count_shape(self):
        return (self.offsets[-1],)

    def group_counts(self, acc: Counts, g: int) -> Counts:
        """Group g's oracle accumulator: views into ``acc``'s counts and ``n_block`` (writes go
        through)."""
        o = self.oracles[g]
        view = acc.counts[self.offsets[g]:self.offsets[g + 1]].reshape(o.count_shape())
        return Counts(view, acc.n_block[self.block_starts[g]:self.block_starts[g + 1]])

    def group_reports(self, acc: Counts, g: int) -> int:
        """Reports of group g (all its wire blocks)."""
        return int(acc.n_block[self.block_starts[g]:self.block_starts[g + 1]].sum())

    def add_reports(self, acc, batch):
        """Each group's reports go to its oracle with the group's own block indices and value
        columns; the oracle updates its views of ``acc`` (one pass when the batch is one block,
        as parsing emits it)."""
        block = batch.block
        if not len(block):
            return acc
        if block[0] == block[-1] and (block == block[0]).all():
            parts = [(self.locate(int(block[0]))[0], batch)]
        else:
            group = np.searchsorted(self.block_starts, block, side="right") - 1
            parts = [(int(g), batch.take(group == g)) for g in np.unique(group)]
        for g, sub in parts:
            o = self.oracles[g]
            local = ReportBatch(sub.block - self.block_starts[g], sub.seed,
                                sub.values[:, :o.values_width])
            o.add_reports(self.group_counts(acc, g), local)
        return acc

    def estimate_prefixes(self, acc: Counts, g: int, prefixes) -> tuple[np.ndarray, np.ndarray]:
        """Group g's estimates (fractions) and standard errors of the given length-``len_g``
        prefixes."""
        o, sub = self.oracles[g], self.group_counts(acc, g)
        prefixes = np.asarray(prefixes, dtype=np.int64)
        if isinstance(o, HCMS):
            return o.estimate_candidates(sub, prefixes)
        est = o.estimate(sub)
        return est.frequencies[prefixes], est.stderr[prefixes]

    def estimate(self, acc, stderr=True):
        """The last group's oracle estimate of every item of ``[0, k)`` (k <= 2^20)."""
        if self.k > ESTIMATE_LIMIT:
            raise ValueError(f"PEM: estimate lists all k = {self.k} items; use discover() for "
                             f"k > {ESTIMATE_LIMIT}")
        f, se = self.estimate_prefixes(acc, self.groups - 1, np.arange(self.k))
        if not stderr:
            se = np.full(self.k, np.nan)
        return Estimate(f, se, {"n": acc.n, "groups": self.groups})

    def heavy_hitters(self, acc: Counts, top: int = 20) -> Estimate:
        """``discover``'s top-N as an ``Estimate`` listing those items (``items``, largest first;
        diagnostics: n, groups, the levels' candidates and reports)."""
        d = discover(self, acc, top=top)
        return Estimate(d.estimates, d.stderr, {"n": d.n, "groups": self.groups,
                                                "levels": d.levels}, items=d.items)

    def variance(self, n, f=None):
        """The last group's oracle variance at ``n/G`` reports."""
        o = self.oracles[-1]
        m = max(1, n // self.groups) if n else 0
        v = o.variance(m, None if f is None else np.asarray(f))
        return np.resize(v, self.k) if f is None else v

    def influence_bound(self, n_block):
        n_block = np.broadcast_to(np.asarray(n_block), (self.n_blocks,))
        return self.oracles[-1].influence_bound(n_block[self.block_starts[-2]:])

    def worst_case_influence(self, counts):
        return self.oracles[-1].worst_case_influence(self.group_counts(counts, self.groups - 1))

    # ----- attack / enumeration ----------------------------------------------------------------------
    def _support(self, batch, items):
        out = np.zeros((len(batch), len(items)), dtype=bool)
        group = np.searchsorted(self.block_starts, batch.block, side="right") - 1
        for g, o in enumerate(self.oracles):
            rows = np.flatnonzero(group == g)
            if not len(rows):
                continue
            pre = self.prefixes(items, g)
            sub = batch.take(rows)
            if isinstance(o, OLH):
                out[rows] = o.hash_items(sub.seed, pre) == sub.values[:, :1]
            elif isinstance(o, ModularSubsetSelection):
                local = sub.block - self.block_starts[g]
                for j, c in enumerate(o.blocks):
                    r = np.flatnonzero(local == j)
                    member = np.zeros((len(r), c.m), dtype=bool)
                    np.put_along_axis(member, sub.values[r, :c.omega], True, axis=1)
                    out[rows[r]] = member[:, pre % c.m]
            else:
                out[rows] = o._support(sub, pre)
        return out

    def attack(self, batch, rng):
        """Uniform member of the items whose prefix the report supports (maximum likelihood)."""
        items = np.arange(self.k)
        return mask_attack(self, batch, rng, lambda sl: self._support(batch.take(sl), items))

    def output_distribution(self, item):
        """Exact ``P((g, seed, y) | item) = P_g(seed, y | prefix_g(item))/G``."""
        out = {}
        for g, o in enumerate(self.oracles):
            pre = int(self.prefixes([item], g)[0])
            for key, p in o.output_distribution(pre).items():
                out[(g, key)] = p / self.groups
        return out


@dataclass
class Discovery:
    """Discovered heavy hitters, largest estimate first: ids, estimated fractions, standard
    errors and ``z``-σ intervals (fractions of the population; counts = fraction × n)."""

    items: np.ndarray
    estimates: np.ndarray
    stderr: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    n: int
    levels: list


def discover(protocol: PEM, acc: Counts, top: int = 20, keep: int | None = None,
             z: float = 1.96) -> Discovery:
    """Level-by-level search over the combined counts: group 0 estimates every prefix of length
    ``s+η``; each level keeps the ``keep`` (default ``2·top``) largest, extends them by all η-bit
    suffixes and estimates them in the next group; returns the last level's ``top``."""
    check_int("discover", "top", top, 1)
    keep = 2 * top if keep is None else check_int("discover", "keep", keep, 1)
    eta = np.uint64(protocol.step)
    cand = np.arange(1 << protocol.prefix_length(0), dtype=np.int64)
    levels = []
    for g in range(protocol.groups):
        f, se = protocol.estimate_prefixes(acc, g, cand)
        last = g == protocol.groups - 1
        order = np.argsort(-f, kind="stable")[:top if last else keep]
        levels.append({"group": g, "prefix_bits": protocol.prefix_length(g),
                       "candidates": int(len(cand)),
                       "n_reports": protocol.group_reports(acc, g)})
        if last:
            cand, f, se = cand[order], f[order], se[order]
            break
        kept = cand[order].view(np.uint64)
        ext = (kept[:, None] << eta) | np.arange(1 << protocol.step, dtype=np.uint64)[None, :]
        cand = ext.ravel().view(np.int64)
    return Discovery(cand, f, se, f - z * se, f + z * se, acc.n, levels)
