"""Several attributes per user (SPEC §8): SPL, SMP, RS+FD and ALLOMFREE.

A user holds a tuple ``v = (v_1..v_d)``, ``v_j ∈ [k_j]``, and the budget covers the whole tuple.
Items are tuples: ``randomize(items, rng)`` takes ``int[n, d]``. The estimate lists the attributes'
domains one after the other: estimated item ``offset_j + x`` is value ``x`` of attribute j
(``k = Σ k_j``; ``attribute_of`` / ``local_item`` map back), and each attribute's part is an
unbiased estimate of that attribute's frequencies.

Every attribute has an *inner* one-attribute protocol (``inner``: one entry per attribute, a
protocol id or ``{"protocol": id, "params": {...}}``; ``"auto"`` resolves, once, to the registered
one-shot protocol of least variance at ``(ε, k_j)`` by ``protocols.advisor``, MSS with the
planner's moduli). The accumulator is every inner accumulator's counts and reports-per-block,
flattened and concatenated (int64[Σ (|counts_j| + blocks_j)]): merging is exact addition.

Report values are wire bytes (``uint8[n, width]``, zero padded), so any inner protocol's reports
ride in one batch: SMP/ALLOMFREE carry one inner report, its attribute in the report's
``attribute`` field and its inner block in ``block`` (``flat_block`` / ``wire_block``); SPL and
RS+FD carry one *segment* per attribute: ``[inner block, 1–4 bytes if it has several][seed, 8
bytes if it uses one][inner payload, padded to its widest block]``.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from privfreq.protocols.base import (Counts, Estimate, FrequencyProtocol, Reason, ReportBatch,
                                     check_epsilon, get_protocol_class, register_protocol, set_fields)
from privfreq.protocols.longitudinal import Longitudinal
from privfreq.protocols.wire import index_width

__all__ = ["ALLOMFREE", "FAKES", "MultiAttribute", "RSFD", "SMP", "SPL", "choose_inner",
           "rsfd_epsilon"]

# Inner protocols "auto" may pick: the advisor's one-shot protocols with pure (not computational)
# privacy.
AUTO_IDS = ("grr", "oue", "sue", "olh", "hr", "ss", "pgr", "mss", "ass", "aue", "alh", "athe",
            "pi_rappor")
# Reports per attribute the advisor's cost figures assume when "auto" chooses (n scales every
# option's variance alike; it weighs the server's per-collection cost against the per-report one).
AUTO_N = 10**6
# "auto" takes the least variance, but among options within this factor of it the cheapest to run
# (predicted client + server time for AUTO_N reports): at k = 22000, ε = 1/3, SS's variance is
# 0.02 % below OUE's for 10-20x the time per report, a difference no estimate would show.
AUTO_TIE = 1.01
FAKES = ("grr", "oue-z", "oue-r")
LONGITUDINAL_INNER = ("lgrr", "losue")


def rsfd_epsilon(epsilon: float, d: int) -> float:
    """RS+FD's per-report budget ``ε′ = ln(d(e^ε − 1) + 1)`` (Arcolezi et al. 2021), also its
    exact tuple-level ε between arbitrary tuples."""
    return math.log(d * math.expm1(epsilon) + 1)


@functools.lru_cache(maxsize=256)
def choose_inner(k: int, epsilon: float) -> tuple[str, tuple]:
    """``(protocol id, sorted params)`` of the one-shot protocol of least variance at (k, ε);
    options within ``AUTO_TIE`` of it go to the least predicted running time."""
    from privfreq.protocols.advisor import advise
    options = [o for o in advise(k, epsilon, AUTO_N, protocols=AUTO_IDS) if o.feasible]
    least = min(o.mse for o in options)

    def cost(o):
        t = o.client_us * AUTO_N * 1e-6 + o.server_s
        return t if math.isfinite(t) else math.inf

    best = min((o for o in options if o.mse <= AUTO_TIE * least), key=cost)
    extra = {p: v for p, v in best.params.items() if p not in ("k", "epsilon")}
    return best.protocol_id, tuple(sorted((p, tuple(v) if isinstance(v, list) else v)
                                          for p, v in extra.items()))


def _inner_entry(owner: str, j: int, entry) -> tuple[str, dict]:
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and set(entry) <= {"protocol", "params"} and "protocol" in entry:
        params = entry.get("params", {})
        if isinstance(entry["protocol"], str) and isinstance(params, dict):
            return entry["protocol"], dict(params)
    raise ValueError(f"{owner}: inner[{j}] must be a protocol id or "
                     f'{{"protocol": id, "params": {{...}}}}, got {entry!r}')


class _Segment:
    """One inner report as a fixed-width byte segment: [block][seed][payload, zero padded]."""

    def __init__(self, proto: FrequencyProtocol):
        self.proto = proto
        self.hb = 0 if proto.n_blocks == 1 else index_width(proto.n_blocks)
        self.sb = 8 if proto.uses_seed else 0
        self.pw = [proto.payload_width(b) for b in range(proto.n_blocks)]
        self.width = self.hb + self.sb + max(self.pw)

    def write(self, batch: ReportBatch) -> np.ndarray:
        n = len(batch)
        out = np.zeros((n, self.width), dtype=np.uint8)
        if self.hb:
            dt = np.dtype({1: "u1", 2: "<u2", 4: "<u4"}[self.hb])
            out[:, :self.hb] = batch.block.astype(dt).view(np.uint8).reshape(n, self.hb)
        if self.sb:
            out[:, self.hb:self.hb + 8] = batch.seed.astype("<i8").view(np.uint8).reshape(n, 8)
        for b in np.unique(batch.block).tolist():
            rows = np.flatnonzero(batch.block == b)
            lo = self.hb + self.sb
            out[rows, lo:lo + self.pw[b]] = self.proto.encode_payloads(
                b, batch.values[rows])
        return out

    def read(self, raw: np.ndarray) -> tuple[list[tuple[np.ndarray, ReportBatch]], np.ndarray]:
        """(per block present: the passing rows and their inner ``ReportBatch``; reason per row)."""
        n = len(raw)
        reason = np.zeros(n, dtype=np.int64)
        block = np.zeros(n, dtype=np.int64)
        seed = np.zeros(n, dtype=np.int64)
        if self.hb:
            for i in range(self.hb):
                block |= raw[:, i].astype(np.int64) << (8 * i)
            reason[block >= self.proto.n_blocks] = Reason.BLOCK_OUT_OF_RANGE
        if self.sb:
            seed = np.ascontiguousarray(raw[:, self.hb:self.hb + 8]).view("<i8")[:, 0].astype(np.int64)
            top = self.proto.block_max_seeds()[np.minimum(block, self.proto.n_blocks - 1)]
            bad = (seed < 0) | (seed > top)
            reason[bad & (reason == 0)] = Reason.BAD_SEED
        lo = self.hb + self.sb
        batches = []
        for b in range(self.proto.n_blocks):
            rows = np.flatnonzero((block == b) & (reason == 0))
            if not len(rows):
                continue
            pad = raw[rows, lo + self.pw[b]:].any(axis=1)
            vals, why = self.proto.decode_payloads(b, raw[rows, lo:lo + self.pw[b]])
            why = np.where(pad, Reason.BAD_PADDING, np.asarray(why, dtype=np.int64))
            reason[rows] = why
            ok = why == Reason.OK
            if ok.any():
                batches.append((rows[ok], ReportBatch(np.full(int(ok.sum()), b, np.int64),
                                                      seed[rows[ok]], np.asarray(vals)[ok])))
        return batches, reason


@dataclass(frozen=True)
class MultiAttribute(FrequencyProtocol):
    """Shared machinery (module docstring); subclasses set ``_inner_protocols`` in
    ``__post_init__`` through ``_set_inner``."""

    asr_kind = "none"
    multi_attribute: ClassVar[bool] = True
    samples: ClassVar[bool] = False   # whether a report carries one attribute (SMP, ALLOMFREE)
    attributes: tuple
    domains: tuple
    epsilon: float
    k: int = field(init=False)

    # ----- set-up ------------------------------------------------------------------------------
    def _check_attributes(self) -> float:
        name = type(self).__name__
        attrs, doms = self.attributes, self.domains
        if not isinstance(attrs, (list, tuple)) or not isinstance(doms, (list, tuple)):
            raise ValueError(f"{name}: attributes and domains must be lists")
        if len(attrs) < 1 or len(attrs) != len(doms):
            raise ValueError(f"{name}: attributes ({len(attrs)}) and domains ({len(doms)}) must be "
                             f"non-empty lists of the same length")
        for a in attrs:
            if not isinstance(a, str) or not a or a != a.strip():
                raise ValueError(f"{name}: attribute names must be non-empty strings without "
                                 f"surrounding spaces, got {a!r}")
        dup = sorted({a for a in attrs if list(attrs).count(a) > 1})
        if dup:
            raise ValueError(f"{name}: duplicate attribute name(s) {dup}")
        for a, k in zip(attrs, doms):
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
                raise ValueError(f"{name}: attribute {a!r} needs a domain k >= 2, got {k!r}")
        set_fields(self, attributes=tuple(attrs), domains=tuple(int(k) for k in doms),
                   k=int(sum(doms)))
        return check_epsilon(name, self.epsilon)

    def _set_inner(self, protos: list[FrequencyProtocol]) -> None:
        offsets = np.concatenate([[0], np.cumsum(self.domains)]).astype(np.int64)
        sizes = [int(np.prod(p.count_shape())) + p.n_blocks for p in protos]
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        set_fields(self, _inner_protocols=tuple(protos), _offsets=offsets, _count_starts=starts)

    def _resolve(self, owner: str, entries, epsilon: float, allowed=None) -> list[dict]:
        """Inner entries as ``{"protocol", "params"}`` dicts ("auto" and MSS moduli resolved)."""
        d = len(self.domains)
        if isinstance(entries, (str, dict)):
            entries = [entries] * d
        entries = list(entries)
        if len(entries) != d:
            raise ValueError(f"{owner}: inner needs one entry per attribute ({d}), got "
                             f"{len(entries)}")
        out = []
        for j, (k, e) in enumerate(zip(self.domains, entries)):
            pid, params = _inner_entry(owner, j, e)
            if pid == "auto" and allowed is None:
                pid, extra = choose_inner(k, epsilon)
                params = {p: list(v) if isinstance(v, tuple) else v for p, v in extra}
            if allowed is not None and pid not in allowed:
                raise ValueError(f"{owner}: inner[{j}] must be one of {list(allowed)}, got {pid!r}")
            cls = get_protocol_class(pid)
            if getattr(cls, "multi_attribute", False):
                raise ValueError(f"{owner}: inner[{j}] cannot itself be multi-attribute ({pid!r})")
            if pid == "mss" and "moduli" not in params:
                from privfreq.protocols.planner import best_moduli
                params["moduli"] = list(best_moduli(k, epsilon))
            out.append({"protocol": pid, "params": params})
        return out

    def _build(self, entries: list[dict], **budget) -> list[FrequencyProtocol]:
        protos = []
        for a, k, e in zip(self.attributes, self.domains, entries):
            try:
                protos.append(get_protocol_class(e["protocol"]).from_params(
                    {"k": k, **budget, **e["params"]}))
            except ValueError as err:
                raise ValueError(f"{type(self).__name__}: attribute {a!r}: {err}") from None
        return protos

    def to_params(self):
        out = super().to_params()
        out["attributes"], out["domains"] = list(self.attributes), list(self.domains)
        if "inner" in out:
            out["inner"] = [{"protocol": e["protocol"], "params": dict(e["params"])}
                            for e in out["inner"]]
        return out

    # ----- shape -------------------------------------------------------------------------------
    @property
    def d(self) -> int:
        return len(self.domains)

    @property
    def inner_protocols(self) -> tuple[FrequencyProtocol, ...]:
        return self._inner_protocols

    def attribute_slice(self, j: int) -> slice:
        """Where attribute j's items sit in the estimate."""
        return slice(int(self._offsets[j]), int(self._offsets[j + 1]))

    def attribute_of(self) -> np.ndarray:
        """Attribute index of every estimated item (int64[k])."""
        return np.repeat(np.arange(self.d), self.domains)

    def local_item(self) -> np.ndarray:
        """Value within its attribute of every estimated item (int64[k])."""
        return np.arange(self.k) - self._offsets[self.attribute_of()]

    @property
    def tuple_epsilon(self) -> float:
        """The exact ε between arbitrary tuples (enumeration tests check it)."""
        return float(self.epsilon)

    def check_items(self, items) -> np.ndarray:
        """Items as int64[n, d]; ``ValueError`` names the attribute and row of a bad value."""
        x = np.asarray(items)
        name = type(self).__name__
        if x.ndim == 1 and self.d == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[1] != self.d or not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"{name}: items must be an integer array of shape (n, {self.d}) "
                             f"(one column per attribute), got dtype {x.dtype} and shape {x.shape}")
        for j, (a, k) in enumerate(zip(self.attributes, self.domains)):
            bad = np.flatnonzero((x[:, j] < 0) | (x[:, j] >= k))
            if len(bad):
                raise ValueError(f"{name}: attribute {a!r}: row {int(bad[0])} holds "
                                 f"{int(x[bad[0], j])}, outside [0, {k})")
        return x.astype(np.int64, copy=False)

    # ----- server ------------------------------------------------------------------------------
    def count_shape(self):
        return (int(self._count_starts[-1]),)

    def inner_counts(self, acc: Counts, j: int) -> Counts:
        """A copy of attribute j's inner accumulator."""
        p = self._inner_protocols[j]
        lo, hi = int(self._count_starts[j]), int(self._count_starts[j + 1])
        nb = p.n_blocks
        return Counts(acc.counts[lo:hi - nb].reshape(p.count_shape()).copy(),
                      acc.counts[hi - nb:hi].copy())

    def _store(self, acc: Counts, j: int, inner: Counts) -> None:
        lo, hi = int(self._count_starts[j]), int(self._count_starts[j + 1])
        acc.counts[lo:hi] = np.concatenate([inner.counts.ravel(), inner.n_block])

    def _add_inner(self, acc: Counts, j: int, batches) -> None:
        p = self._inner_protocols[j]
        inner = self.inner_counts(acc, j)
        for b in batches:
            p.add_reports(inner, b)
        self._store(acc, j, inner)

    def _inner_estimates(self, acc: Counts, stderr: bool) -> list[Estimate | None]:
        """Each attribute's inner estimate (None where it has no reports)."""
        out = []
        for j, p in enumerate(self._inner_protocols):
            inner = self.inner_counts(acc, j)
            out.append(p.estimate(inner, stderr=stderr) if inner.n else None)
        return out

    def _assemble(self, parts, extra_var, n_attr, stderr: bool) -> Estimate:
        """Concatenate per-attribute estimates; ``extra_var(j, f)`` adds to the variance."""
        f = np.full(self.k, np.nan)
        se = np.full(self.k, np.nan)
        attrs = []
        for j, (a, est) in enumerate(zip(self.attributes, parts)):
            sl = self.attribute_slice(j)
            info = {"attribute": a, "k": self.domains[j], "n": int(n_attr[j]),
                    "inner": self._inner_protocols[j].protocol_id}
            if est is not None:
                f[sl] = est.frequencies
                if stderr:
                    plug = np.clip(est.frequencies, 0, 1)
                    se[sl] = np.sqrt(est.stderr ** 2 + extra_var(j, plug))
                info.update({key: v for key, v in est.diagnostics.items() if key != "n"})
            attrs.append(info)
        return Estimate(f, se, {"n": int(sum(n_attr)) if self.samples else int(n_attr[0]),
                                "tuple_epsilon": self.tuple_epsilon, "attributes": attrs})

    def split(self, vector: np.ndarray) -> list[np.ndarray]:
        """A length-k vector (an estimate, a truth) cut into the attributes' parts."""
        return [vector[self.attribute_slice(j)] for j in range(self.d)]

    def attribute_mse(self, n: int, f: np.ndarray | None = None) -> np.ndarray:
        """Mean ``variance(n, f)`` per attribute (float64[d])."""
        return np.array([float(np.mean(v)) for v in self.split(self.variance(n, f))])

    def _fs(self, f):
        return [None] * self.d if f is None else self.split(np.asarray(f, dtype=np.float64))

    # ----- influence: one report changes at most its attributes' estimates --------------------
    def worst_case_influence(self, counts: Counts) -> np.ndarray:
        return np.concatenate([p.worst_case_influence(self.inner_counts(counts, j))
                               for j, p in enumerate(self._inner_protocols)])

    def information_bits(self):
        """Every attribute's inner report: the sum of their information bits (SPL, RS+FD)."""
        return float(sum(p.information_bits() for p in self._inner_protocols))


class _Sampled(MultiAttribute):
    """A report is one attribute's inner report: SMP and ALLOMFREE. Blocks are flat: attribute
    j's inner block b is block ``block_start_j + b``."""

    samples = True

    def _set_inner(self, protos):
        super()._set_inner(protos)
        starts = np.concatenate([[0], np.cumsum([p.n_blocks for p in protos])]).astype(np.int64)
        set_fields(self, _block_starts=starts,
                   _block_attr=np.repeat(np.arange(len(protos)), np.diff(starts)))

    @property
    def n_blocks(self):
        return int(self._block_starts[-1])

    @property
    def wire_attributes(self) -> int:
        return self.d

    def flat_block(self, attribute: np.ndarray, block: np.ndarray) -> np.ndarray:
        """Flat block of (attribute, inner block); -1 where either is out of range."""
        a = np.asarray(attribute, dtype=np.int64)
        b = np.asarray(block, dtype=np.int64)
        ok_a = (a >= 0) & (a < self.d)
        aa = np.where(ok_a, a, 0)
        nb = np.diff(self._block_starts)[aa]
        ok = ok_a & (b >= 0) & (b < nb)
        return np.where(ok, self._block_starts[aa] + b, -1)

    def wire_block(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(attribute, inner block) of flat blocks."""
        a = self._block_attr[np.asarray(flat, dtype=np.int64)]
        return a, np.asarray(flat, dtype=np.int64) - self._block_starts[a]

    def _local(self, block: int) -> tuple[int, int]:
        j = int(self._block_attr[block])
        return j, block - int(self._block_starts[j])

    @property
    def uses_seed(self):
        return any(p.uses_seed for p in self._inner_protocols)

    def seed_bound(self):
        return max(p.seed_bound() for p in self._inner_protocols)

    def block_max_seeds(self):
        """Each flat block's inner protocol's (a GRR attribute's reports carry seed 0)."""
        return np.concatenate([p.block_max_seeds() for p in self._inner_protocols])

    @property
    def values_width(self):
        return max(self.payload_width(b) for b in range(self.n_blocks))

    def payload_width(self, block):
        j, b = self._local(block)
        return self._inner_protocols[j].payload_width(b)

    def encode_payloads(self, block, values):
        return np.ascontiguousarray(np.asarray(values, dtype=np.uint8)[:, :self.payload_width(block)])

    def decode_payloads(self, block, raw):
        j, b = self._local(block)
        raw = np.array(raw, dtype=np.uint8, copy=True, ndmin=2)
        _, reason = self._inner_protocols[j].decode_payloads(b, raw)
        out = np.zeros((len(raw), self.values_width), dtype=np.uint8)
        w = min(raw.shape[1], self.values_width)
        out[:, :w] = raw[:, :w]
        return out, np.asarray(reason, dtype=np.int64)

    def _wrap(self, j: int, inner: ReportBatch, rows: np.ndarray, block, seed, values) -> None:
        p = self._inner_protocols[j]
        block[rows] = self._block_starts[j] + inner.block
        seed[rows] = inner.seed
        for b in np.unique(inner.block).tolist():
            sel = np.flatnonzero(inner.block == b)
            enc = p.encode_payloads(b, inner.values[sel])
            values[rows[sel], :enc.shape[1]] = enc

    def _report(self, attr: np.ndarray, make_inner) -> ReportBatch:
        """Reports of users whose attribute is ``attr``; ``make_inner(j, rows)`` randomizes."""
        n = len(attr)
        block = np.zeros(n, np.int64)
        seed = np.zeros(n, np.int64)
        values = np.zeros((n, self.values_width), dtype=np.uint8)
        for j in range(self.d):
            rows = np.flatnonzero(attr == j)
            if len(rows):
                self._wrap(j, make_inner(j, rows), rows, block, seed, values)
        return ReportBatch(block, seed, values)

    def _inner_batches(self, batch):
        """Per flat block present: (rows, attribute, the rows as an inner ``ReportBatch``)."""
        for blk in np.unique(batch.block).tolist():
            rows = np.flatnonzero(batch.block == blk)
            j, b = self._local(blk)
            p = self._inner_protocols[j]
            vals, _ = p.decode_payloads(b, batch.values[rows, :p.payload_width(b)])
            yield rows, j, ReportBatch(np.full(len(rows), b, np.int64), batch.seed[rows], vals)

    def add_reports(self, acc, batch):
        for _, j, inner in self._inner_batches(batch):
            self._add_inner(acc, j, [inner])
        acc.n_block += np.bincount(batch.block, minlength=self.n_blocks)
        return acc

    def _attribute_n(self, acc):
        return np.add.reduceat(acc.n_block, self._block_starts[:-1]) if self.n_blocks else []

    def estimate(self, acc, stderr=True):
        """Each attribute's inner estimate from its ``n_j`` reports; standard errors add the
        split term ``f(1−f)(n − n_j)/(n_j (n − 1))`` (which users report j is random)."""
        n_attr = self._attribute_n(acc)
        n = max(int(acc.n), 2)

        def split_var(j, f):
            nj = max(int(n_attr[j]), 1)
            return f * (1 - f) * (n - nj) / (nj * (n - 1))

        return self._assemble(self._inner_estimates(acc, stderr), split_var, n_attr, stderr)

    def variance(self, n, f=None):
        """``Var_inner(n/d, f_j) + (d−1) f_j(1−f_j)/n`` per item (SPEC §8)."""
        out = []
        for p, fj in zip(self._inner_protocols, self._fs(f)):
            v = np.asarray(p.variance(n / self.d, fj), dtype=np.float64)
            if fj is not None:
                v = v + (self.d - 1) * fj * (1 - fj) / n
            out.append(np.broadcast_to(v, (p.k,)))
        return np.concatenate(out)

    def influence_bound(self, n_block):
        n_block = np.asarray(n_block, dtype=np.int64)
        return max(p.influence_bound(n_block[self._block_starts[j]:self._block_starts[j + 1]])
                   for j, p in enumerate(self._inner_protocols))

    def attack(self, batch, rng):
        """The inner attacker on the reported attribute: guesses ``offset_j + x̂``."""
        out = np.zeros(len(batch), dtype=np.int64)
        for rows, j, inner in self._inner_batches(batch):
            out[rows] = self._offsets[j] + self._inner_protocols[j].attack(inner, rng)
        return out

    def _one_report_distribution(self, item, dist_of):
        """``P((j, y) | v) = P_j(y | v_j)/d``."""
        v = tuple(int(x) for x in item)
        out = {}
        for j, p in enumerate(self._inner_protocols):
            for y, pr in dist_of(p, v[j]).items():
                out[(j, y)] = pr / self.d
        return out

    def output_distribution(self, item):
        return self._one_report_distribution(item, lambda p, x: p.output_distribution(x))

    def information_bits(self):
        """The attribute index, then one inner report (uniform attribute): ``log2 d + mean``."""
        return math.log2(self.d) + float(np.mean([p.information_bits()
                                                   for p in self._inner_protocols]))


@register_protocol("smp")
@dataclass(frozen=True)
class SMP(_Sampled):
    """Random sampling of one attribute (SMP; Wang et al. 2019, Arcolezi et al. 2021; SPEC §8).

    Distribution: the user draws ``j`` uniformly from the d attributes and reports
    ``(j, A_j(v_j))``, ``A_j`` the attribute's inner protocol at the full ε (ε-LDP for the tuple;
    it reveals which attribute was sent). Estimator: attribute j from its ``n_j`` reports by
    ``A_j``'s own estimator. Variance: ``Var_A_j(ε, n/d) + (d−1) f(1−f)/n`` (the split term).
    """

    display_name = "SMP"
    inner: Any = "auto"

    def __post_init__(self):
        eps = self._check_attributes()
        entries = self._resolve("SMP", self.inner, eps)
        set_fields(self, epsilon=eps, inner=tuple(entries))
        self._set_inner(self._build(entries, epsilon=eps))

    def randomize(self, items, rng):
        x = self.check_items(items)
        attr = rng.integers(0, self.d, len(x))
        return self._report(attr, lambda j, rows: self._inner_protocols[j].randomize(
            x[rows, j], rng))


class _Segmented(MultiAttribute):
    """A report carries one segment per attribute (SPL, RS+FD): one block, no seed field."""

    def _set_segments(self) -> None:
        segs = tuple(_Segment(p) for p in self._inner_protocols)
        starts = np.concatenate([[0], np.cumsum([s.width for s in segs])]).astype(np.int64)
        set_fields(self, _segments=segs, _seg_starts=starts)

    @property
    def values_width(self):
        return int(self._seg_starts[-1])

    def payload_width(self, block):
        return self.values_width

    def encode_payloads(self, block, values):
        return np.ascontiguousarray(values, dtype=np.uint8)

    def decode_payloads(self, block, raw):
        """Every segment checked by its inner protocol (block, seed, payload, zero padding)."""
        raw = np.array(raw, dtype=np.uint8, copy=True, ndmin=2)
        reason = np.zeros(len(raw), dtype=np.int64)
        if raw.shape[1] != self.values_width:
            reason[:] = Reason.BAD_LENGTH
            return np.zeros((len(raw), self.values_width), np.uint8), reason
        for j, seg in enumerate(self._segments):
            _, why = seg.read(self._segment_values(j, raw))
            reason = np.where(reason == 0, why, reason)
        return raw, reason

    def _segment_values(self, j, values):
        return values[:, self._seg_starts[j]:self._seg_starts[j + 1]]

    def _write(self, inner_batches) -> ReportBatch:
        n = len(inner_batches[0])
        values = np.concatenate([s.write(b) for s, b in zip(self._segments, inner_batches)],
                                axis=1)
        return ReportBatch(np.zeros(n, np.int64), np.zeros(n, np.int64), values)

    def add_reports(self, acc, batch):
        for j, seg in enumerate(self._segments):
            parts, _ = seg.read(self._segment_values(j, batch.values))
            self._add_inner(acc, j, [b for _, b in parts])
        acc.n_block[0] += len(batch)
        return acc

    def _attack_segments(self, batch, attr, rng):
        """Guess ``offset_j + x̂`` with attribute ``attr`` per report and its inner attacker."""
        out = np.zeros(len(batch), np.int64)
        for j, p in enumerate(self._inner_protocols):
            rows = np.flatnonzero(attr == j)
            parts, _ = self._segments[j].read(self._segment_values(j, batch.values[rows]))
            for idx, b in parts:
                out[rows[idx]] = self._offsets[j] + p.attack(b, rng)
        return out


@register_protocol("spl")
@dataclass(frozen=True)
class SPL(_Segmented):
    """Splitting the budget (SPL; SPEC §8): every attribute reported by its inner protocol at
    ``ε/d`` in one report (composition: ε-LDP for the tuple). Estimator: each attribute by its
    inner estimator over all n reports; variance ``Var_A_j(ε/d, n)``. The baseline."""

    display_name = "SPL"
    inner: Any = "auto"

    def __post_init__(self):
        eps = self._check_attributes()
        entries = self._resolve("SPL", self.inner, eps / len(self.domains))
        set_fields(self, epsilon=eps, inner=tuple(entries))
        self._set_inner(self._build(entries, epsilon=eps / self.d))
        self._set_segments()

    def randomize(self, items, rng):
        x = self.check_items(items)
        return self._write([p.randomize(x[:, j], rng) for j, p in enumerate(self._inner_protocols)])

    def estimate(self, acc, stderr=True):
        parts = self._inner_estimates(acc, stderr)
        return self._assemble(parts, lambda j, f: 0.0, [acc.n] * self.d, stderr)

    def variance(self, n, f=None):
        return np.concatenate([np.broadcast_to(np.asarray(p.variance(n, fj), np.float64), (p.k,))
                               for p, fj in zip(self._inner_protocols, self._fs(f))])

    def influence_bound(self, n_block):
        """Every attribute's inner bound at n reports (one report moves every attribute)."""
        n = int(np.sum(n_block))
        if any(p.n_blocks > 1 for p in self._inner_protocols):
            raise ValueError("SPL: influence_bound needs each inner block's reports; an inner "
                             "protocol has several blocks (use worst_case_influence)")
        return max(p.influence_bound([n]) for p in self._inner_protocols)

    def attack(self, batch, rng):
        """Uniform attribute, then its inner attacker on that segment (each is ε/d-LDP)."""
        return self._attack_segments(batch, rng.integers(0, self.d, len(batch)), rng)

    def output_distribution(self, item):
        """``Π_j P_j(y_j | v_j)`` over every combination of the attributes' outputs."""
        dists = [p.output_distribution(int(v)) for p, v in zip(self._inner_protocols, item)]
        out = {}
        for combo in itertools.product(*[list(dd.items()) for dd in dists]):
            out[tuple(y for y, _ in combo)] = math.prod(pr for _, pr in combo)
        return out



def _bernoulli_vectors(k: int, prob) -> dict:
    """Exact distribution of k independent bits, bit i one w.p. ``prob[i]`` (keys: 0/1 tuples)."""
    out = {}
    for bits in itertools.product((0, 1), repeat=k):
        out[bits] = math.prod(r if b else 1 - r for b, r in zip(bits, prob))
    return out


@register_protocol("rsfd")
@dataclass(frozen=True)
class RSFD(_Segmented):
    """Random sampling plus fake data (RS+FD; Arcolezi et al., CIKM 2021; SPEC §8).

    Distribution: the user draws ``j`` uniformly; attribute j is randomized at
    ``ε′ = ln(d(e^ε−1)+1)`` (GRR for ``fake="grr"``, OUE otherwise; ``(p, q)`` its support
    probabilities), every other attribute i is fake: a uniform value of ``[k_i]`` (grr), OUE of
    the zero vector (oue-z: every bit Bernoulli(q)) or OUE of a uniform one-hot (oue-r). All d
    attributes are sent, so the report hides which one is real. A fake supports a given value
    w.p. ``s = 1/k_i`` (grr), ``q`` (oue-z), ``(p + (k_i−1)q)/k_i`` (oue-r).
    Estimator (N: supports of x among all n reports):
    ``f̂_x = (d·N/n − (d−1)s − q)/(p − q)`` (SPEC §8's three forms).
    Variance with the population fixed: a user holding x supports it w.p. ``a = (p+(d−1)s)/d``,
    any other w.p. ``b = (q+(d−1)s)/d``, so ``Var = d²[f a(1−a) + (1−f) b(1−b)]/(n(p−q)²)``;
    SPEC's ``d²δ(1−δ)/(n(p−q)²)`` (users drawn i.i.d. from f) is larger by ``f(1−f)/n``.
    Privacy: ε between tuples differing in one attribute of equal domains only; the tuple-level
    ε between arbitrary tuples is exactly ε′ (``tuple_epsilon``; enumeration tests).
    """

    display_name = "RS+FD"
    fake: str = "grr"
    epsilon_prime: float = field(init=False, repr=False)

    def __post_init__(self):
        eps = self._check_attributes()
        if self.fake not in FAKES:
            raise ValueError(f"RSFD: fake must be one of {list(FAKES)}, got {self.fake!r}")
        e1 = rsfd_epsilon(eps, self.d)
        set_fields(self, epsilon=eps, epsilon_prime=e1)
        pid = "grr" if self.fake == "grr" else "oue"
        self._set_inner([get_protocol_class(pid)(k, e1) for k in self.domains])
        self._set_segments()

    @property
    def tuple_epsilon(self):
        return float(self.epsilon_prime)

    def fake_support(self, j: int) -> float:
        """P(a fake value of attribute j supports a given value)."""
        p = self._inner_protocols[j]
        return {"grr": 1 / p.k, "oue-z": p.q, "oue-r": (p.p + (p.k - 1) * p.q) / p.k}[self.fake]

    def _fake(self, j: int, m: int, rng) -> ReportBatch:
        p = self._inner_protocols[j]
        z = np.zeros(m, np.int64)
        if self.fake == "grr":
            return ReportBatch(z, z, rng.integers(0, p.k, m)[:, None])
        if self.fake == "oue-z":
            from privfreq.protocols.unary_encoding import randomize_bits
            return ReportBatch(z, z, randomize_bits(z, p.k, p.q, p.q, rng))
        return p.randomize(rng.integers(0, p.k, m), rng)

    def randomize(self, items, rng):
        x = self.check_items(items)
        n = len(x)
        attr = rng.integers(0, self.d, n)
        batches = []
        for j, p in enumerate(self._inner_protocols):
            real = attr == j
            sub = [p.randomize(x[real, j], rng), self._fake(j, int(n - real.sum()), rng)]
            order = np.concatenate([np.flatnonzero(real), np.flatnonzero(~real)])
            values = np.empty((n,) + sub[0].values.shape[1:], dtype=sub[0].values.dtype)
            values[order] = np.concatenate([sub[0].values, sub[1].values.astype(values.dtype)])
            batches.append(ReportBatch(np.zeros(n, np.int64), np.zeros(n, np.int64), values))
        return self._write(batches)

    def _ab(self, j: int) -> tuple[float, float, float, float]:
        p = self._inner_protocols[j]
        s = self.fake_support(j)
        return p.p, p.q, (p.p + (self.d - 1) * s) / self.d, (p.q + (self.d - 1) * s) / self.d

    def _variance(self, j: int, n, f):
        p, q, a, b = self._ab(j)
        f = np.zeros(self.domains[j]) if f is None else np.asarray(f, np.float64)
        return self.d ** 2 * (f * a * (1 - a) + (1 - f) * b * (1 - b)) / (n * (p - q) ** 2)

    def estimate(self, acc, stderr=True):
        n = acc.n
        f = np.full(self.k, np.nan)
        se = np.full(self.k, np.nan)
        attrs = []
        for j, inner in enumerate(self._inner_protocols):
            p, q, _, _ = self._ab(j)
            sl = self.attribute_slice(j)
            if n:
                c = inner.support_counts(self.inner_counts(acc, j)).astype(np.float64)
                f[sl] = (self.d * c / n - (self.d - 1) * self.fake_support(j) - q) / (p - q)
                if stderr:
                    se[sl] = np.sqrt(self._variance(j, n, np.clip(f[sl], 0, 1)))
            attrs.append({"attribute": self.attributes[j], "k": self.domains[j], "n": n,
                          "inner": inner.protocol_id, "fake": self.fake})
        return Estimate(f, se, {"n": n, "tuple_epsilon": self.tuple_epsilon,
                                "epsilon_prime": self.epsilon_prime, "attributes": attrs})

    def variance(self, n, f=None):
        return np.concatenate([self._variance(j, n, fj) for j, fj in enumerate(self._fs(f))])

    def influence_bound(self, n_block):
        """A report moves every attribute: ``d/((n+1)(p−q))`` (the largest over attributes)."""
        n = int(np.sum(n_block))
        return max(self.d / ((n + 1) * (self._ab(j)[0] - self._ab(j)[1])) for j in range(self.d))

    def worst_case_influence(self, counts):
        """``d·max(N/n, 1−N/n)/((n+1)(p−q))`` per item (no data: N/n read as b)."""
        n = counts.n
        out = []
        for j, inner in enumerate(self._inner_protocols):
            p, q, _, b = self._ab(j)
            frac = (np.full(self.domains[j], b) if n == 0 else
                    inner.support_counts(self.inner_counts(counts, j)) / n)
            out.append(self.d * np.maximum(frac, 1 - frac) / ((n + 1) * (p - q)))
        return np.concatenate(out)

    def attack(self, batch, rng):
        """The attribute most likely real, then its inner attacker. Under a uniform prior a grr
        or oue-r fake is distributed as a real report, so the attribute is uniform; an oue-z
        fake has fewer ones: pick the largest ``(1/k)[c·p/q + (k−c)(1−p)/(1−q)]`` (c ones)."""
        if self.fake != "oue-z":
            return self._attack_segments(batch, rng.integers(0, self.d, len(batch)), rng)
        lr = np.empty((len(batch), self.d))
        for j, inner in enumerate(self._inner_protocols):
            bits = inner._bits(self._segment_values(j, batch.values))
            c = bits.sum(axis=1)
            p, q = inner.p, inner.q
            lr[:, j] = (c * p / q + (inner.k - c) * (1 - p) / (1 - q)) / inner.k
        best = lr.max(axis=1, keepdims=True)
        ties = lr >= best * (1 - 1e-12)
        pick = np.argmax(ties * rng.random(lr.shape), axis=1)
        return self._attack_segments(batch, pick, rng)

    def fake_distribution(self, j: int) -> dict:
        """Exact distribution of attribute j's fake value (output keys as the inner's)."""
        p = self._inner_protocols[j]
        if self.fake == "grr":
            return {y: 1 / p.k for y in range(p.k)}
        if self.fake == "oue-z":
            return _bernoulli_vectors(p.k, [p.q] * p.k)
        out: dict = {}
        for x in range(p.k):
            for y, pr in p.output_distribution(x).items():
                out[y] = out.get(y, 0.0) + pr / p.k
        return out

    def output_distribution(self, item):
        """``(1/d) Σ_j P′_j(y_j | v_j) Π_{i≠j} fake_i(y_i)`` over every output tuple."""
        real = [p.output_distribution(int(v)) for p, v in zip(self._inner_protocols, item)]
        fake = [self.fake_distribution(j) for j in range(self.d)]
        out = {}
        for ys in itertools.product(*[list(fd) for fd in fake]):
            out[ys] = sum(real[j][ys[j]] * math.prod(fake[i][ys[i]] for i in range(self.d)
                                                     if i != j)
                          for j in range(self.d)) / self.d
        return out


@register_protocol("allomfree")
@dataclass(frozen=True)
class ALLOMFREE(Longitudinal, _Sampled):
    """SMP over rounds with memoization (ALLOMFREE; Arcolezi et al. 2022; SPEC §8).

    Distribution: a user draws its attribute ``j`` uniformly once (its public state, sent in
    every report) and reports attribute j every round through that attribute's memoized protocol
    (L-GRR or L-OSUE, §7; ``"auto"``: the one of smaller variance at ``(ε∞, ε1, k_j)``): a
    permanent response at ε∞ per distinct value, then an instantaneous one at ε1 per report.
    Estimator and variance: SMP's, with the inner longitudinal protocol:
    ``Var_A_j(n/d) + (d−1) f(1−f)/n``. One report is ε1-LDP for the tuple; the permanent round
    ε∞; a user's budget cap is ``max_j k_j·ε∞``.
    """

    display_name = "ALLOMFREE"
    epsilon_perm: float = 2.0
    calibration: str = "exact"
    inner: Any = "auto"
    real_epsilon: float = field(init=False, repr=False)
    real_epsilon_perm: float = field(init=False, repr=False)

    def __post_init__(self):
        from privfreq.protocols.longitudinal import check_budgets
        eps = self._check_attributes()
        eps_perm, eps = check_budgets("ALLOMFREE", self.epsilon_perm, eps, self.calibration)
        set_fields(self, epsilon=eps, epsilon_perm=eps_perm)
        entries = self.inner
        if isinstance(entries, (str, dict)):
            entries = [entries] * self.d
        entries = [self._auto_longitudinal(k) if e == "auto" else e
                   for k, e in zip(self.domains, entries)]
        entries = self._resolve("ALLOMFREE", entries, eps, allowed=LONGITUDINAL_INNER)
        set_fields(self, inner=tuple(entries))
        budget = {"epsilon_perm": eps_perm, "epsilon": eps, "calibration": self.calibration}
        self._set_inner(self._build(entries, **budget))
        set_fields(self, real_epsilon=max(p.real_epsilon for p in self._inner_protocols),
                   real_epsilon_perm=max(p.real_epsilon_perm for p in self._inner_protocols))

    def _auto_longitudinal(self, k: int) -> str:
        """L-GRR or L-OSUE, whichever has the smaller variance at f = 0."""
        budget = {"epsilon_perm": self.epsilon_perm, "epsilon": self.epsilon,
                  "calibration": self.calibration}
        v = {pid: float(get_protocol_class(pid)(k, **budget).variance(1)[0])
             for pid in LONGITUDINAL_INNER}
        return min(v, key=v.get)

    # ----- the user's state: its attribute, then its inner memo ----------------------------
    @property
    def memo_key_count(self):
        return max(p.memo_key_count for p in self._inner_protocols)

    @property
    def memo_words(self):
        return max(p.memo_words for p in self._inner_protocols)

    @property
    def public_width(self):
        return 1

    def draw_public(self, n, rng):
        return rng.integers(0, self.d, n)[:, None]

    def memo_keys(self, items, public):
        x = np.asarray(items, dtype=np.int64)
        return x[np.arange(len(x)), public[:, 0]]

    def permanent(self, keys, public, rng):
        out = np.zeros((len(keys), self.memo_words), dtype=np.int64)
        for j, p in enumerate(self._inner_protocols):
            rows = np.flatnonzero(public[:, 0] == j)
            if len(rows):
                memo = p.permanent(keys[rows], np.zeros((len(rows), 0), np.int64), rng)
                out[rows, :memo.shape[1]] = memo
        return out

    def instantaneous(self, memo, public, rng):
        return self._report(public[:, 0], lambda j, rows: self._inner_protocols[j].instantaneous(
            memo[rows, :self._inner_protocols[j].memo_words], np.zeros((len(rows), 0), np.int64),
            rng))

    def permanent_distribution(self, item):
        """Exact ``P((j, B′) | v) = P_j(B′ | v_j)/d`` (round 1, ε∞)."""
        return self._one_report_distribution(item, lambda p, x: p.permanent_distribution(x))

    def diagnostics(self):
        return self.longitudinal_diagnostics()


def rsfd_budget_for_tuple_epsilon(tuple_epsilon: float, d: int) -> float:
    """The ε at which RS+FD's tuple-level ε′ equals ``tuple_epsilon``: ``ln((e^ε′−1)/d + 1)``."""
    return math.log(math.expm1(tuple_epsilon) / d + 1)


def compare(attributes, domains, epsilon: float, n: int, epsilon_perm: float | None = None
            ) -> list[dict]:
    """Predicted per-attribute MSE of every multi-attribute protocol at n users (uniform f per
    attribute, so SMP's split term counts), best total first. RS+FD appears twice: at ε (its
    per-attribute guarantee; tuple-level ε′ > ε) and at the ε whose ε′ equals ε (the same
    tuple-level guarantee as the others). ALLOMFREE needs ``epsilon_perm`` (ε is then ε1)."""
    d = len(domains)
    f = np.concatenate([np.full(k, 1.0 / k) for k in domains])
    candidates = [("spl", {}, epsilon), ("smp", {}, epsilon)]
    for fake in FAKES:
        candidates.append(("rsfd", {"fake": fake}, epsilon))
        candidates.append(("rsfd", {"fake": fake}, rsfd_budget_for_tuple_epsilon(epsilon, d)))
    if epsilon_perm is not None:
        candidates.append(("allomfree", {"epsilon_perm": epsilon_perm}, epsilon))
    rows = []
    for pid, extra, eps in candidates:
        proto = get_protocol_class(pid)(tuple(attributes), tuple(domains), eps, **extra)
        mse = proto.attribute_mse(n, f)
        rows.append({"protocol": pid, "params": extra, "epsilon": eps,
                     "tuple_epsilon": proto.tuple_epsilon,
                     "inner": [p.protocol_id for p in proto.inner_protocols],
                     "attribute_mse": mse.tolist(), "total_mse": float(mse.sum()),
                     "wire_bytes": float(np.mean([proto.payload_width(b)
                                                  for b in range(proto.n_blocks)]))})
    rows.sort(key=lambda r: r["total_mse"])
    return rows
