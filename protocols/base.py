"""The contract every frequency protocol implements, and the protocol registry.

A protocol is a frozen dataclass of its parameters (validated in ``__post_init__``, every derived
constant computed once) that also carries the protocol's behaviour:

* client:  ``randomize(items, rng) -> ReportBatch``                 (vectorized, injected RNG)
* wire:    ``encode_payloads(block, values) -> uint8[n, L]`` and
           ``decode_payloads(block, uint8[n, L]) -> (values, reason)``  (per block, vectorized)
* server:  ``create_accumulator() -> Counts``; ``add_reports(acc, batch)``; ``merge(accs)``;
           ``estimate(acc, stderr=True) -> Estimate``
* theory:  ``variance(n, f=None)`` per-item variance of the raw estimate.
* attack:  ``attack(batch, rng)`` the Bayes attacker's guesses; ``closed_form_asr(f)`` its success
           rate (``asr_kind``: "exact", "approx" or "none").
* influence: ``influence_bound(n_block)`` and ``worst_case_influence(counts)``, the largest change
           one accepted report can make to the raw estimate.

``SupportCounting`` is the base of the protocols whose estimate debiases per-item support counts;
``protocols.least_squares.LeastSquaresDecoder`` the base of the weighted least-squares decoders.

Reports in memory are a ``ReportBatch``: an int64 block index per report (0 for protocols with one
block), an int64 public seed per report (0 where unused) and a 2-D ``values`` array whose meaning
each protocol documents (GRR: the value; SS: the sorted subset; MSS: the subset padded with -1; ...).
On the wire each report's payload is a fixed number of bytes per (protocol, block).
"""
from __future__ import annotations

import dataclasses
import enum
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable

import numpy as np

from privfreq.protocols.estimators import debias, pure_variance

__all__ = [
    "BATCH_ENTRIES",
    "Counts",
    "DENSE_LIMIT",
    "Estimate",
    "FrequencyProtocol",
    "Reason",
    "ReportBatch",
    "SupportCounting",
    "check_epsilon",
    "check_int",
    "get_protocol_class",
    "protocol_ids",
    "register_protocol",
    "set_fields",
]

# Largest k for dense k×k linear algebra (covariances, influence bounds): a k×k Cholesky at 4096
# takes ~1 s and 128 MiB; beyond it MSS uses stochastic estimates with CG solves (O(k·ℓ) per
# iteration) and RAPPOR's standard errors are NaN.
DENSE_LIMIT = 4096
# Memory bound of one ReportBatch's values: 16 MiB (2^21 int64 entries) keeps a batch cheap to
# pickle between stages and bounds peak memory per worker thread whatever the report width is.
BATCH_ENTRIES = 1 << 21
# Also the report-file reading batch (pipelines/aggregate.py): per batch, reading + validation cost
# ~30 numpy calls (~0.1 ms), so 2^16 rows make that < 5% at GRR's ~20 ns/report. Measured at 10^7
# GRR reports (benchmarks/ingest.py files, 2 threads): 2^16 rows 0.87 s (Parquet) / 1.04 s (Avro),
# 2^13 rows 1.04 / 1.33 s (per-batch overhead), 2^18 rows 0.90 / 1.32 s (cache misses, fewer
# parallel batches).
MAX_BATCH_ROWS = 1 << 16
MIN_BATCH_ROWS = 1024


class Reason(enum.IntEnum):
    """Why a report was rejected. Stable codes: add new members, never renumber."""

    OK = 0
    MALFORMED_RECORD = 1       # not a report record (missing/ill-typed fields, garbage bytes)
    FINGERPRINT_MISMATCH = 2   # report made under another collection config
    PROTOCOL_MISMATCH = 3      # protocol id differs from the config's
    BLOCK_OUT_OF_RANGE = 4     # block index j outside [0, n_blocks)
    BAD_LENGTH = 5             # payload length differs from the block's fixed width
    VALUE_OUT_OF_RANGE = 6     # an index/value outside its domain
    DUPLICATE_VALUE = 7        # a subset with a repeated element
    BAD_SEED = 8               # public-randomness field outside its range
    BAD_PADDING = 9            # nonzero padding bits / bytes
    UNREADABLE_FILE = 10       # the rest of an input file could not be decoded (e.g. truncated)
    TRUNCATED_RECORDS = 11     # records a block / row group declares past the end of a cut file
    CORRUPT_RECORDS = 12       # records a block / row group declares that cannot be decoded
    ROUND_OUT_OF_RANGE = 13    # a report's round is negative or outside the run's --rounds
    ATTRIBUTE_OUT_OF_RANGE = 14  # attribute missing (a sampled multi-attribute protocol), outside
                                 # [0, d), or present for a protocol without attributes


@dataclass
class ReportBatch:
    """A batch of ``n`` randomized reports in protocol-native numpy form."""

    block: np.ndarray   # int64[n]
    seed: np.ndarray    # int64[n]
    values: np.ndarray  # [n, w], protocol-specific dtype and meaning

    def __post_init__(self):
        n = len(self.values)
        if len(self.block) != n or len(self.seed) != n:
            raise ValueError(
                f"ReportBatch: block ({len(self.block)}), seed ({len(self.seed)}) and values "
                f"({n}) must have the same length")

    def __len__(self) -> int:
        return len(self.values)

    def take(self, index) -> "ReportBatch":
        """Rows selected by a boolean mask or integer index array."""
        return ReportBatch(self.block[index], self.seed[index], self.values[index])


@dataclass
class Counts:
    """Integer sufficient statistics: a fixed-shape count tensor plus reports per block.

    Merging is exact addition, so any sharding merged in any order gives identical counts.
    """

    counts: np.ndarray    # int64, protocol-defined fixed shape
    n_block: np.ndarray   # int64[n_blocks], reports received per block

    @property
    def n(self) -> int:
        return int(self.n_block.sum())

    def merge_in(self, other: "Counts") -> "Counts":
        """Add ``other`` into ``self`` (mutates only ``self``) and return ``self``."""
        if other.counts.shape != self.counts.shape or other.n_block.shape != self.n_block.shape:
            raise ValueError(
                f"Counts: cannot merge shape {other.counts.shape}/{other.n_block.shape} into "
                f"{self.counts.shape}/{self.n_block.shape} (different configs?)")
        self.counts += other.counts
        self.n_block += other.n_block
        return self

    def copy(self) -> "Counts":
        return Counts(self.counts.copy(), self.n_block.copy())


@dataclass
class Estimate:
    """Raw (unbiased unless ridge > 0) frequency estimate with per-item standard errors."""

    frequencies: np.ndarray          # float64[k] (or one per listed item)
    stderr: np.ndarray               # float64[k] (or one per listed item)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    # The item ids the estimate lists when it does not list all of [0, k) (a discovery
    # protocol's heavy hitters, largest first); None: item i is position i.
    items: np.ndarray | None = None


_REGISTRY: dict[str, type["FrequencyProtocol"]] = {}


def register_protocol(protocol_id: str):
    """Class decorator: register a protocol under a stable id (ids are never redefined)."""

    def deco(cls):
        if protocol_id in _REGISTRY:
            raise ValueError(f"protocol id {protocol_id!r} is already registered")
        cls.protocol_id = protocol_id
        _REGISTRY[protocol_id] = cls
        return cls

    return deco


def protocol_ids() -> list[str]:
    """The registered protocol ids, sorted."""
    _load_all()
    return sorted(_REGISTRY)


def get_protocol_class(protocol_id: str) -> type["FrequencyProtocol"]:
    """The protocol class registered under ``protocol_id``; ``ValueError`` lists the valid ids."""
    _load_all()
    if not isinstance(protocol_id, str):
        raise ValueError(f"protocol: id must be a string, got {protocol_id!r}; "
                         f"valid ids are {sorted(_REGISTRY)}")
    try:
        return _REGISTRY[protocol_id]
    except KeyError:
        raise ValueError(
            f"protocol: unknown id {protocol_id!r}; valid ids are {sorted(_REGISTRY)}") from None


def _load_all() -> None:
    from privfreq import protocols  # noqa: F401  (importing the package registers every protocol module)


def check_epsilon(owner: str, epsilon) -> float:
    """Validate a privacy budget: a finite float > 0."""
    try:
        eps = float(epsilon)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: epsilon must be a number > 0, got {epsilon!r}") from None
    if not np.isfinite(eps) or eps <= 0:
        raise ValueError(f"{owner}: epsilon must be a finite number > 0, got {epsilon!r}")
    return eps


def check_int(owner: str, name: str, value, lo: int, hi: int | None = None) -> int:
    """Validate an integer field in ``[lo, hi]`` (``hi=None``: unbounded)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{owner}: {name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{owner}: {name} must be {rng}, got {value}")
    return int(value)


def set_fields(obj, **values) -> None:
    """Set attributes of a frozen dataclass instance (derived constants in ``__post_init__``)."""
    for name, value in values.items():
        object.__setattr__(obj, name, value)


class FrequencyProtocol(ABC):
    """Base of every protocol. Subclasses are frozen dataclasses registered by id.

    Subclass fields are the user parameters (serialised in the collection config); derived constants
    are ``field(init=False)`` set in ``__post_init__`` with ``object.__setattr__``.
    """

    protocol_id: ClassVar[str]
    # Short display name (plots, reports).
    display_name: ClassVar[str] = ""
    # Cached properties dropped on pickling (rebuilt lazily on the worker).
    transient: ClassVar[tuple[str, ...]] = ()
    # How exact ``closed_form_asr`` is: "exact", "approx" or "none".
    asr_kind: ClassVar[str] = "none"
    # Whether the attacker success rate compares with the other protocols' at equal ε.
    comparable_asr: ClassVar[bool] = True
    k: int
    epsilon: float

    def check_k_epsilon(self, owner: str | None = None, k_max: int | None = None) -> float:
        """Validate ``k >= 2`` (``<= k_max``) and ``epsilon``; store the float ε and return it.
        ``owner`` (default: the class name) prefixes the error messages."""
        owner = owner or type(self).__name__
        check_int(owner, "k", self.k, 2, k_max)
        eps = check_epsilon(owner, self.epsilon)
        object.__setattr__(self, "epsilon", eps)
        return eps

    def set_support(self, p: float, q: float) -> None:
        """Store the derived support probabilities ``p`` and ``q``."""
        set_fields(self, p=p, q=q)

    def __getstate__(self):
        state = dict(self.__dict__)
        for name in self.transient:
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    # ----- shape of the protocol -------------------------------------------------------------
    @property
    def n_blocks(self) -> int:
        """Number of distinct block indices a report may carry (MSS: ℓ; RAPPOR: cohorts)."""
        return 1

    @property
    def uses_seed(self) -> bool:
        """Whether reports carry per-report public randomness in ``seed``."""
        return False

    @property
    def wire_attributes(self) -> int:
        """Attributes a report's ``attribute`` field may name (0: the field must be null). The
        sampled multi-attribute protocols (``protocols.multidim``) send ``(attribute, inner
        block)`` and map them to their flat ``block`` with ``flat_block`` / ``wire_block``."""
        return 0

    def seed_bound(self) -> int:
        """Valid seeds are ``0 <= seed < seed_bound()`` (1 when unused)."""
        return 1

    def block_max_seeds(self) -> np.ndarray:
        """int64[n_blocks]: the largest valid seed of each block, ``seed_bound() − 1`` unless
        blocks use different public randomness (a PEM level or SMP attribute without seeds:
        0); parsing rejects a seed above its block's (int64: a bound of 2^63 fits as 2^63 − 1)."""
        return np.full(self.n_blocks, self.seed_bound() - 1, dtype=np.int64)

    @property
    def values_width(self) -> int:
        """Columns of ``ReportBatch.values``."""
        return 1

    @property
    def batch_rows(self) -> int:
        """Reports per in-memory batch: as many as fit BATCH_ENTRIES values, within
        ``[MIN_BATCH_ROWS, MAX_BATCH_ROWS]``."""
        return int(max(MIN_BATCH_ROWS, min(MAX_BATCH_ROWS, BATCH_ENTRIES // self.values_width)))

    # ----- client ------------------------------------------------------------------------------
    @abstractmethod
    def randomize(self, items: np.ndarray, rng: np.random.Generator) -> ReportBatch:
        """Randomize a batch of items in ``[0, k)`` into reports."""

    def check_items(self, items) -> np.ndarray:
        """Items as int64; ``ValueError`` if any lies outside ``[0, k)`` (the client's choice:
        an out-of-domain item is a caller bug, never silently mapped)."""
        items = np.asarray(items)
        if items.ndim != 1 or not np.issubdtype(items.dtype, np.integer):
            raise ValueError(f"{type(self).__name__}: items must be a 1-D integer array, "
                             f"got dtype {items.dtype} and shape {items.shape}")
        if items.size and (items.min() < 0 or items.max() >= self.k):
            bad = items[(items < 0) | (items >= self.k)][0]
            raise ValueError(f"{type(self).__name__}: items must be in [0, {self.k}), got {bad}")
        return items.astype(np.int64, copy=False)

    # ----- wire --------------------------------------------------------------------------------
    @abstractmethod
    def payload_width(self, block: int) -> int:
        """Bytes of one report's payload in ``block``."""

    @abstractmethod
    def encode_payloads(self, block: int, values: np.ndarray) -> np.ndarray:
        """Reports of one block, native ``values`` → ``uint8[n, payload_width(block)]``."""

    @abstractmethod
    def decode_payloads(self, block: int, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``uint8[n, payload_width(block)]`` → (native values, ``Reason`` code per row).

        Rows whose reason is not ``Reason.OK`` are rejected; their values are arbitrary."""

    def information_bits(self) -> float:
        """Information-theoretic message size in bits (expected over blocks)."""
        raise NotImplementedError

    # ----- server ------------------------------------------------------------------------------
    @abstractmethod
    def count_shape(self) -> tuple[int, ...]:
        """Shape of the integer count tensor."""

    def create_accumulator(self) -> Counts:
        return Counts(np.zeros(self.count_shape(), dtype=np.int64),
                      np.zeros(self.n_blocks, dtype=np.int64))

    @abstractmethod
    def add_reports(self, acc: Counts, batch: ReportBatch) -> Counts:
        """Add a batch of valid reports into ``acc`` (vectorized) and return it."""

    def merge(self, accs: Iterable[Counts]) -> Counts:
        """Merge accumulators; mutates only the first one."""
        it = iter(accs)
        try:
            acc = next(it)
        except StopIteration:
            return self.create_accumulator()
        for other in it:
            acc.merge_in(other)
        return acc

    @abstractmethod
    def estimate(self, acc: Counts, stderr: bool = True) -> Estimate:
        """Raw frequency estimate from merged counts; ``stderr=False``: standard errors NaN."""

    @abstractmethod
    def variance(self, n: int, f: np.ndarray | None = None) -> np.ndarray:
        """Per-item variance of the raw estimate with ``n`` reports (``f=None``: at f_x = 0)."""

    def predicted_mse(self, n: int, f: np.ndarray | None = None) -> float:
        """Mean over items of ``variance(n, f)``."""
        return float(np.mean(self.variance(n, f)))

    # ----- attacker (SPEC §4) -------------------------------------------------------------------
    def attack(self, batch: ReportBatch, rng: np.random.Generator) -> np.ndarray:
        """The Bayes attacker's guess of each report's item (int64[n])."""
        raise NotImplementedError(f"{type(self).__name__}: no attack")

    def closed_form_asr(self, f: np.ndarray | None = None) -> float:
        """Closed-form attacker success rate when items follow ``f`` (None: uniform); NaN if
        none is known."""
        return math.nan

    def spec_asr(self) -> float:
        """The ASR formula of the specification (default: ``closed_form_asr()``)."""
        return self.closed_form_asr()

    # ----- influence of one report ----------------------------------------------------------------
    def influence_bound(self, n_block) -> float:
        """Upper bound on ``max_x |f̂_x(D ∪ {h}) − f̂_x(D)|`` over every accepted report h and every
        dataset D with ``n_block`` reports per block."""
        raise NotImplementedError(f"{type(self).__name__}: no influence bound")

    def worst_case_influence(self, counts: Counts) -> np.ndarray:
        """Per item, the exact ``max_h |f̂_x(D ∪ {h}) − f̂_x(D)|`` for the reports D behind
        ``counts``."""
        raise NotImplementedError(f"{type(self).__name__}: no influence bound")

    # ----- evaluation grid ------------------------------------------------------------------------
    @classmethod
    def evaluation_params(cls, k: int, epsilon: float, options) -> tuple[dict[str, Any], Any]:
        """Parameters of this protocol in an evaluation grid cell and a JSON-able note of how
        they were chosen (None when there is nothing to record). ``options``: the evaluation's
        parsed flags."""
        return {"k": k, "epsilon": epsilon}, None

    # ----- exact distribution, for the privacy checks of SPEC §6.1 ------------------------------
    def output_distribution(self, item: int) -> dict[Any, float]:
        """Exact ``P(output | item)`` over all outputs (small domains only)."""
        raise NotImplementedError

    # ----- config -------------------------------------------------------------------------------
    def to_params(self) -> dict[str, Any]:
        """The user parameters (init fields) as JSON-able values."""
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.init:
                v = getattr(self, f.name)
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "FrequencyProtocol":
        names = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        unknown = set(params) - names
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown parameter(s) {sorted(unknown)}; "
                             f"valid are {sorted(names)}")
        required = {f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                    if f.init and f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING}
        missing = required - set(params)
        if missing:
            raise ValueError(f"{cls.__name__}: missing parameter(s) {sorted(missing)}")
        return cls(**params)


class SupportCounting(FrequencyProtocol):
    """Protocols estimated from per-item support counts (Wang, Blocki, Li, Jha 2017).

    A report supports item x with probability ``p`` if the user holds x and ``q`` otherwise
    (``support_probabilities``); ``C_x`` counts the reports supporting x. Estimator
    ``f̂_x = (C_x/n − q)/(p − q)``, variance ``[q(1−q) + f_x (p−q)(1−p−q)]/(n (p−q)²)``. One
    report adds ``s_x ∈ {0, 1}`` to ``C_x``, so adding it to n reports moves ``f̂_x`` by
    ``(s_x − C_x/n)/((n+1)(p − q))``.
    """

    def support_probabilities(self) -> tuple[float, float]:
        """``(p, q)``: P(a report supports x | the user holds x), and | the user holds another."""
        return self.p, self.q

    def support_counts(self, acc: Counts) -> np.ndarray:
        """``C_x`` for the k items."""
        return acc.counts

    def frequencies(self, acc: Counts) -> np.ndarray:
        """The raw estimate ``f̂``."""
        p, q = self.support_probabilities()
        return debias(self.support_counts(acc), acc.n, p, q)

    def diagnostics(self) -> dict[str, Any]:
        """Constants reported beside every estimate."""
        return {}

    def estimate(self, acc: Counts, stderr: bool = True) -> Estimate:
        """``f̂`` with standard errors ``sqrt(variance(n, clip(f̂, 0, 1)))`` (plug-in)."""
        n = acc.n
        f = self.frequencies(acc)
        se = (np.sqrt(self.variance(n, np.clip(f, 0, 1))) if stderr
              else np.full(self.k, np.nan))
        return Estimate(f, se, {"n": n, **self.diagnostics()})

    def variance(self, n, f=None):
        p, q = self.support_probabilities()
        return pure_variance(self.k, n, p, q, f)

    def influence_bound(self, n_block) -> float:
        """``1/((n+1)(p − q))``, attained when some ``C_x/n`` is 0 or 1."""
        p, q = self.support_probabilities()
        return 1.0 / ((int(np.sum(n_block)) + 1) * (p - q))

    def worst_case_influence(self, counts: Counts) -> np.ndarray:
        """``max(C_x/n, 1 − C_x/n)/((n+1)(p − q))`` (no data: ``C_x/n`` read as q)."""
        p, q = self.support_probabilities()
        n = counts.n
        frac = (np.full(self.k, q) if n == 0
                else np.asarray(self.support_counts(counts), dtype=np.float64) / n)
        return np.maximum(frac, 1 - frac) / ((n + 1) * (p - q))


@dataclass(frozen=True)
class PureSupport(SupportCounting):
    """The fields of a support-counting protocol whose user parameters are ``(k, ε)`` and whose
    ``p``, ``q`` are derived (``set_support`` in ``__post_init__``); subclasses append theirs."""

    k: int
    epsilon: float
    p: float = field(init=False, repr=False)
    q: float = field(init=False, repr=False)
