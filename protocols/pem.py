"""Prefix Extension Method (PEM) for heavy-hitter discovery in universes too large to list.

Wang, Li, Jha, "Locally Differentially Private Heavy Hitter Identification", IEEE TDSC 2019
(arXiv 1708.06674, 2017/2018); SPEC §9.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from privfreq.protocols.attacks import mask_attack
from privfreq.protocols.base import (Counts, Estimate, FrequencyProtocol, ReportBatch, check_epsilon,
                                     check_int, register_protocol)
from privfreq.protocols.cms import HCMS
from privfreq.protocols.olh import OLH

__all__ = ["PEM", "Discovery", "discover"]

# Largest prefix domain 2^len served by OLH: its server hashes every prefix under every report's
# seed (Θ(n_g·2^len)), 1024 keeps that ≈ 10^8 hash evaluations for 10^5 reports per group (~0.3 s);
# longer prefixes go to HCMS, whose sketch answers any candidate list in O(K) per candidate.
OLH_LIMIT = 1 << 10
# estimate() (the common interface) lists the whole item domain: only for k up to this.
ESTIMATE_LIMIT = 1 << 20


@register_protocol("pem")
@dataclass(frozen=True)
class PEM(FrequencyProtocol):
    """Prefix Extension Method (Wang, Li, Jha 2018).

    Items are integers in ``[0, k)`` read as ``L = bit_length(k−1)``-bit strings (k = 2^64: any
    int64 id viewed as uint64, e.g. ``hashing.item_id`` of a word). With ``G = (L − s)/η`` groups,
    a user joins group g uniformly (the report's block) and reports the prefix of length
    ``len_g = s + (g+1)η`` of its item through a frequency oracle at the full ε: OLH on
    ``[2^len_g]`` when ``2^len_g <= olh_limit``, else HCMS (K = ``hashes``, m = ``buckets``, hash
    seed ``hash_seed + g``). One report per user: ε-LDP (enumeration test).

    Server (``discover``): group 0 estimates all ``2^(s+η)`` prefixes; each level keeps the
    ``keep`` largest estimates, extends them by every η-bit suffix and estimates those in the next
    group; the last level's top-N are the heavy hitters. Estimates are fractions of the group's
    reports, i.e. unbiased for the population's fractions (groups are uniform); in counts they
    scale by G (``f̂·n``). Variance of a prefix estimate is the oracle's at ``n_g ≈ n/G`` reports
    (OLH: ``4e^ε/(n_g(e^ε−1)²)``; HCMS: ``(m/(m−1))²(c²−...)/n_g``, ``protocols.cms``).

    Accumulator: the groups' oracle counts concatenated (int64[Σ sizes]); reports per group in
    ``n_block``; exact merge. ``estimate`` (common interface) is the last group's oracle on
    ``[0, k)`` (k <= 2^20).
    """

    display_name = "PEM"
    k: int
    epsilon: float
    step: int = 2
    start_bits: int | None = None
    hashes: int = 256
    buckets: int = 1024
    hash_seed: int = 0
    seed_bits: int = 63
    olh_limit: int = OLH_LIMIT
    bits: int = field(init=False, repr=False)
    groups: int = field(init=False, repr=False)
    oracles: tuple = field(init=False, repr=False, compare=False)
    offsets: tuple = field(init=False, repr=False, compare=False)

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
        object.__setattr__(self, "bits", bits)
        object.__setattr__(self, "groups", (bits - self.start_bits) // self.step)
        oracles, offsets, off = [], [], 0
        for g in range(self.groups):
            size = 1 << self.prefix_length(g)
            if size <= self.olh_limit:
                o = OLH(size, self.epsilon, seed_bits=self.seed_bits)
            else:
                o = HCMS(int(min(size, ESTIMATE_LIMIT)), self.epsilon, self.hashes, self.buckets,
                         (self.hash_seed + g) % (1 << 63))
            oracles.append(o)
            offsets.append(off)
            off += int(np.prod(o.count_shape()))
        object.__setattr__(self, "oracles", tuple(oracles))
        object.__setattr__(self, "offsets", tuple(offsets + [off]))

    def to_params(self):
        return {"k": self.k, "epsilon": self.epsilon, "step": self.step,
                "start_bits": self.start_bits, "hashes": self.hashes, "buckets": self.buckets,
                "hash_seed": self.hash_seed, "seed_bits": self.seed_bits,
                "olh_limit": self.olh_limit}

    def prefix_length(self, g: int) -> int:
        return self.start_bits + (g + 1) * self.step

    def prefixes(self, items, g: int) -> np.ndarray:
        """The length-``len_g`` prefixes of items (int64; the uint64 bit pattern for L = 64)."""
        u = np.asarray(items, dtype=np.int64).view(np.uint64)
        return (u >> np.uint64(self.bits - self.prefix_length(g))).view(np.int64)

    # ----- shape ---------------------------------------------------------------------------------
    @property
    def n_blocks(self):
        return self.groups

    @property
    def uses_seed(self):
        return any(isinstance(o, OLH) for o in self.oracles)

    def seed_bound(self):
        return 1 << self.seed_bits if self.uses_seed else 1

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
        g = rng.integers(0, self.groups, n)
        seed = np.zeros(n, np.int64)
        y = np.zeros(n, np.int64)
        for j, o in enumerate(self.oracles):
            rows = np.flatnonzero(g == j)
            if not len(rows):
                continue
            b = o.randomize(self.prefixes(x[rows], j), rng)
            seed[rows], y[rows] = b.seed, b.values[:, 0]
        return ReportBatch(g.astype(np.int64), seed, y[:, None])

    # ----- wire ----------------------------------------------------------------------------------
    def payload_width(self, block):
        return self.oracles[block].payload_width(0)

    def encode_payloads(self, block, values):
        return self.oracles[block].encode_payloads(0, values)

    def decode_payloads(self, block, raw):
        return self.oracles[block].decode_payloads(0, raw)

    def information_bits(self):
        return float(np.mean([o.information_bits() for o in self.oracles])) + math.log2(self.groups)

    # ----- server --------------------------------------------------------------------------------
    def count_shape(self):
        return (self.offsets[-1],)

    def group_counts(self, acc: Counts, g: int) -> Counts:
        """Group g's oracle accumulator, a view into ``acc`` (writes go through)."""
        o = self.oracles[g]
        view = acc.counts[self.offsets[g]:self.offsets[g + 1]].reshape(o.count_shape())
        return Counts(view, np.array([acc.n_block[g]], dtype=np.int64))

    def add_reports(self, acc, batch):
        for g in range(self.groups):
            rows = batch.block == g
            if rows.any():
                self.oracles[g].add_reports(self.group_counts(acc, g), batch.take(rows))
        acc.n_block += np.bincount(batch.block, minlength=self.groups)
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

    def variance(self, n, f=None):
        """The last group's oracle variance at ``n/G`` reports."""
        o = self.oracles[-1]
        m = max(1, n // self.groups) if n else 0
        v = o.variance(m, None if f is None else np.asarray(f))
        return np.resize(v, self.k) if f is None else v

    def influence_bound(self, n_block):
        n_block = np.broadcast_to(np.asarray(n_block), (self.groups,))
        return self.oracles[-1].influence_bound(int(n_block[-1]))

    def worst_case_influence(self, counts):
        return self.oracles[-1].worst_case_influence(self.group_counts(counts, self.groups - 1))

    # ----- attack / enumeration ----------------------------------------------------------------------
    def _support(self, batch, items):
        out = np.zeros((len(batch), len(items)), dtype=bool)
        for g, o in enumerate(self.oracles):
            rows = np.flatnonzero(batch.block == g)
            if not len(rows):
                continue
            pre = self.prefixes(items, g)
            sub = batch.take(rows)
            if isinstance(o, OLH):
                out[rows] = o.hash_items(sub.seed, pre) == sub.values[:, :1]
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
                       "candidates": int(len(cand)), "n_reports": int(acc.n_block[g])})
        if last:
            cand, f, se = cand[order], f[order], se[order]
            break
        kept = cand[order].view(np.uint64)
        ext = (kept[:, None] << eta) | np.arange(1 << protocol.step, dtype=np.uint64)[None, :]
        cand = ext.ravel().view(np.int64)
    return Discovery(cand, f, se, f - z * se, f + z * se, acc.n, levels)
