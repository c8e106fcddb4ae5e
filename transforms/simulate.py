"""Synthetic reports generated and randomized inside the pipeline, in numpy batches."""

import math
from dataclasses import dataclass
from typing import Iterator

import apache_beam as beam
import numpy as np
from apache_beam import pvalue

from privfreq.protocols.base import ReportBatch
from privfreq.protocols.config import CollectionConfig
from privfreq.transforms.estimate import SumArrays

__all__ = ["SHARD_SIZE", "Distribution", "EvolveShard", "ItemSampler", "SimulateReports",
           "SimulateRounds", "batch_rows"]

# Reports per simulation shard (one Beam element each). 2^18 gives 4 shards per 10^6 reports, enough
# to keep a few workers busy, while each shard is ~0.1-1 s of numpy work, so the ~5 µs per-element
# Beam cost is invisible.
SHARD_SIZE = 1 << 18


def batch_rows(config: CollectionConfig) -> int:
    """Reports per batch for this config (``FrequencyProtocol.batch_rows``)."""
    return config.protocol.batch_rows


@dataclass(frozen=True)
class Distribution:
    """Item distribution over ``[k]``: ``zipf:S`` (P(i) ∝ (i+1)^−S), ``spike`` (all item 0) or
    ``uniform``."""

    name: str
    s: float = 0.0

    @classmethod
    def parse(cls, text: str) -> "Distribution":
        name, _, arg = str(text).partition(":")
        if name == "zipf":
            try:
                s = float(arg)
            except ValueError:
                raise ValueError(f"distribution: zipf needs an exponent, as zipf:1.1, got "
                                 f"{text!r}") from None
            if not math.isfinite(s) or s < 0:
                raise ValueError(f"distribution: the zipf exponent must be finite and >= 0, "
                                 f"got {text!r}")
            return cls("zipf", s)
        if name in ("spike", "uniform") and not arg:
            return cls(name)
        raise ValueError(f"distribution: must be one of zipf:S, spike, uniform; got {text!r}")

    def __str__(self):
        return f"zipf:{self.s:g}" if self.name == "zipf" else self.name

    def probabilities(self, k: int) -> np.ndarray:
        if self.name == "spike":
            p = np.zeros(k)
            p[0] = 1.0
            return p
        if self.name == "uniform":
            return np.full(k, 1.0 / k)
        w = np.arange(1, k + 1, dtype=np.float64) ** -self.s
        return w / w.sum()


class ItemSampler:
    """Draws users' items: int64[m] over ``[k]`` from ``distribution``, or for a multi-attribute
    protocol int64[m, d] tuples, attribute j from ``distribution`` over ``[k_j]``, the attributes
    tied by a Gaussian copula of correlation ``correlation`` (0: independent; the latent normals
    of any two attributes have correlation ρ, and each value is the inverse CDF of its normal's
    quantile, so the largest values co-occur as ρ → 1). ``counts`` gives the true counts as the
    protocol's estimate lists them (attributes concatenated)."""

    def __init__(self, protocol, distribution: Distribution, correlation: float = 0.0):
        self._multi = getattr(protocol, "multi_attribute", False)
        domains = protocol.domains if self._multi else (protocol.k,)
        self._domains = domains
        self._cdfs = []
        for k in domains:
            cdf = np.cumsum(distribution.probabilities(k))
            self._cdfs.append(cdf / cdf[-1])
        self._rho = float(correlation)

    def draw(self, m: int, rng: np.random.Generator) -> np.ndarray:
        if not self._multi:
            return self._inverse(0, rng.random(m))
        from scipy.special import ndtr
        z = rng.standard_normal((m, len(self._domains)))
        if self._rho:
            z = np.sqrt(self._rho) * rng.standard_normal((m, 1)) + np.sqrt(1 - self._rho) * z
        u = ndtr(z)
        return np.stack([self._inverse(j, u[:, j]) for j in range(len(self._domains))], 1)

    def _inverse(self, j: int, u: np.ndarray) -> np.ndarray:
        k = self._domains[j]
        return np.minimum(np.searchsorted(self._cdfs[j], u, side="right"), k - 1)

    def counts(self, items: np.ndarray) -> np.ndarray:
        if not self._multi:
            return np.bincount(items, minlength=self._domains[0])
        return np.concatenate([np.bincount(items[:, j], minlength=k)
                               for j, k in enumerate(self._domains)])


def shard_sizes(n: int, shard_size: int = SHARD_SIZE) -> list[tuple[int, int]]:
    """``[(shard index, reports in shard)]`` covering exactly ``n`` reports."""
    return [(i, min(shard_size, n - start)) for i, start in enumerate(range(0, n, shard_size))]


class _ShardFn(beam.DoFn):
    """Shared set-up of the simulation DoFns: the config (rebuilt on the worker), the item
    sampler, the seed and the reports per batch."""

    def __init__(self, config: CollectionConfig, distribution: Distribution, seed: int,
                 rows: int, correlation: float = 0.0):
        self._config_json = config.to_json(indent=None)
        self._distribution = distribution
        self._seed = seed
        self._rows = rows
        self._correlation = correlation

    def setup(self):
        self._protocol = CollectionConfig.from_json(self._config_json).protocol
        self._sampler = ItemSampler(self._protocol, self._distribution, self._correlation)


@beam.typehints.with_input_types(tuple[int, int])
@beam.typehints.with_output_types(ReportBatch)
class RandomizeShard(_ShardFn):
    """(shard, n_shard) -> ReportBatches (main) + the shard's true item counts (``truth``).

    Each shard uses its own ``np.random.default_rng([seed, shard])``: the output does not depend on
    how shards are spread over workers or in which order they run.
    """

    def process(self, element: tuple[int, int]) -> Iterator:
        shard, n_shard = element
        rng = np.random.default_rng([self._seed, shard])
        truth = np.zeros(self._protocol.k, dtype=np.int64)
        for start in range(0, n_shard, self._rows):
            items = self._sampler.draw(min(self._rows, n_shard - start), rng)
            truth += self._sampler.counts(items)
            yield self._protocol.randomize(items, rng)
        yield pvalue.TaggedOutput("truth", truth)


class SimulateReports(beam.PTransform):
    """PBegin -> {"reports": PCollection[ReportBatch], "truth": PCollection[int64[k]] (one)}.
    ``correlation``: multi-attribute protocols' copula correlation (``ItemSampler``)."""

    def __init__(self, config: CollectionConfig, n: int, distribution: Distribution, seed: int,
                 shard_size: int = SHARD_SIZE, correlation: float = 0.0):
        super().__init__()
        if not 0.0 <= correlation <= 1.0:
            raise ValueError(f"simulate: correlation must be in [0, 1], got {correlation}")
        if correlation and not getattr(config.protocol, "multi_attribute", False):
            raise ValueError("simulate: --correlation needs a multi-attribute protocol")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"simulate: n must be an integer >= 1, got {n!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"simulate: seed must be an integer >= 0, got {seed!r}")
        self._config = config
        self._n = n
        self._distribution = distribution
        self._seed = seed
        self._shard_size = shard_size
        self._correlation = correlation

    def expand(self, pbegin):
        k = self._config.protocol.k
        shards = (pbegin
                  | "Shards" >> beam.Create(shard_sizes(self._n, self._shard_size))
                  | "SpreadShards" >> beam.Reshuffle())
        # pcoll: (shard index, reports in shard)
        out = shards | "Randomize" >> beam.ParDo(RandomizeShard(
            self._config, self._distribution, self._seed, batch_rows(self._config),
            self._correlation)
        ).with_outputs("truth", main="reports")
        # out.reports: ReportBatch(block[int64, b], seed[int64, b], values[b, w]); out.truth: int64[k]
        truth = out.truth | "SumTruth" >> beam.CombineGlobally(SumArrays((k,)))
        return {"reports": out.reports, "truth": truth}


@beam.typehints.with_input_types(tuple[int, int])
class EvolveShard(_ShardFn):
    """(shard, users in shard) -> ``(round, ReportBatch)`` for every round (main), ``(round,
    int64[k] true counts)`` (``truth``) and the shard's ``int64[cap + 1]`` histogram of distinct
    memo keys per user after the last round (``keys``).

    The shard holds its users' state for all rounds in one ``MemoStore`` (memoized permanent
    responses, public state, ledger): round 0 draws every user's item from the distribution; in
    each later round a user keeps its item with probability ``1 − change_rate``, else draws a
    new one from the distribution. ``np.random.default_rng([seed, shard])`` per shard.
    """

    def __init__(self, config: CollectionConfig, distribution: Distribution, seed: int,
                 rounds: int, change_rate: float, rows: int, correlation: float = 0.0):
        super().__init__(config, distribution, seed, rows, correlation)
        self._rounds, self._change = rounds, change_rate

    def process(self, element: tuple[int, int]) -> Iterator:
        from privfreq.protocols.longitudinal_client import MemoStore

        shard, m = element
        proto = self._protocol
        rng = np.random.default_rng([self._seed, shard])
        store = MemoStore(proto)
        users = store.add_users(m, rng)
        items = self._sampler.draw(m, rng)
        for r in range(self._rounds):
            if r:  # a moving user draws a whole new item (tuple)
                move = np.flatnonzero(rng.random(m) < self._change)
                items[move] = self._sampler.draw(len(move), rng)
            yield pvalue.TaggedOutput("truth", (r, self._sampler.counts(items)))
            for start in range(0, m, self._rows):
                sl = slice(start, start + self._rows)
                yield r, store.report(users[sl], items[sl], rng)
        yield pvalue.TaggedOutput("keys", np.bincount(store.n_keys,
                                                      minlength=proto.memo_key_count + 1))


class SimulateRounds(beam.PTransform):
    """PBegin -> {"reports": (round, ReportBatch), "truth": (round, int64[k]) per round,
    "keys": one int64[cap + 1] histogram of memo keys per user}; users sharded
    (``SHARD_SIZE``), each shard evolving its users through all rounds (:class:`EvolveShard`)."""

    def __init__(self, config: CollectionConfig, n: int, distribution: Distribution, seed: int,
                 rounds: int, change_rate: float, shard_size: int = SHARD_SIZE,
                 correlation: float = 0.0):
        super().__init__()
        if not 0.0 <= correlation <= 1.0:
            raise ValueError(f"simulate: correlation must be in [0, 1], got {correlation}")
        if not getattr(config.protocol, "longitudinal", False):
            raise ValueError(f"simulate --rounds: protocol {config.protocol_id!r} is not "
                             f"longitudinal (lgrr, losue, lsue, loloha, biloloha, dbitflip)")
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"simulate: rounds must be an integer >= 1, got {rounds!r}")
        if not 0.0 <= change_rate <= 1.0:
            raise ValueError(f"simulate: change rate must be in [0, 1], got {change_rate}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"simulate: n must be an integer >= 1, got {n!r}")
        self._args = (config, n, distribution, seed, rounds, change_rate, shard_size, correlation)

    def expand(self, pbegin):
        config, n, distribution, seed, rounds, change_rate, shard_size, rho = self._args
        proto = config.protocol
        out = (pbegin
               | "Shards" >> beam.Create(shard_sizes(n, shard_size))
               | "SpreadShards" >> beam.Reshuffle()
               | "Evolve" >> beam.ParDo(EvolveShard(config, distribution, seed, rounds,
                                                    change_rate, batch_rows(config), rho)
                                        ).with_outputs("truth", "keys", main="reports"))
        truth = out.truth | "SumTruth" >> beam.CombinePerKey(SumArrays((proto.k,)))
        keys = out.keys | "SumKeys" >> beam.CombineGlobally(
            SumArrays((proto.memo_key_count + 1,)))
        return {"reports": out.reports, "truth": truth, "keys": keys}
