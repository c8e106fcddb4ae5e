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

__all__ = ["SHARD_SIZE", "Distribution", "EvolveShard", "SimulateReports", "SimulateRounds",
           "batch_rows"]

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


def shard_sizes(n: int, shard_size: int = SHARD_SIZE) -> list[tuple[int, int]]:
    """``[(shard index, reports in shard)]`` covering exactly ``n`` reports."""
    return [(i, min(shard_size, n - start)) for i, start in enumerate(range(0, n, shard_size))]


@beam.typehints.with_input_types(tuple[int, int])
@beam.typehints.with_output_types(ReportBatch)
class RandomizeShard(beam.DoFn):
    """(shard, n_shard) -> ReportBatches (main) + the shard's true item counts (``truth``).

    Each shard uses its own ``np.random.default_rng([seed, shard])``: the output does not depend on
    how shards are spread over workers or in which order they run.
    """

    def __init__(self, config: CollectionConfig, distribution: Distribution, seed: int,
                 rows: int):
        self._config_json = config.to_json(indent=None)
        self._distribution = distribution
        self._seed = seed
        self._rows = rows

    def setup(self):
        self._protocol = CollectionConfig.from_json(self._config_json).protocol
        cdf = np.cumsum(self._distribution.probabilities(self._protocol.k))
        cdf /= cdf[-1]
        self._cdf = cdf

    def process(self, element: tuple[int, int]) -> Iterator:
        shard, n_shard = element
        rng = np.random.default_rng([self._seed, shard])
        k = self._protocol.k
        truth = np.zeros(k, dtype=np.int64)
        for start in range(0, n_shard, self._rows):
            m = min(self._rows, n_shard - start)
            items = np.minimum(np.searchsorted(self._cdf, rng.random(m), side="right"), k - 1)
            truth += np.bincount(items, minlength=k)
            yield self._protocol.randomize(items, rng)
        yield pvalue.TaggedOutput("truth", truth)


class SimulateReports(beam.PTransform):
    """PBegin -> {"reports": PCollection[ReportBatch], "truth": PCollection[int64[k]] (one)}."""

    def __init__(self, config: CollectionConfig, n: int, distribution: Distribution, seed: int,
                 shard_size: int = SHARD_SIZE):
        super().__init__()
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"simulate: n must be an integer >= 1, got {n!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"simulate: seed must be an integer >= 0, got {seed!r}")
        self._config = config
        self._n = n
        self._distribution = distribution
        self._seed = seed
        self._shard_size = shard_size

    def expand(self, pbegin):
        k = self._config.protocol.k
        shards = (pbegin
                  | "Shards" >> beam.Create(shard_sizes(self._n, self._shard_size))
                  | "SpreadShards" >> beam.Reshuffle())
        # pcoll: (shard index, reports in shard)
        out = shards | "Randomize" >> beam.ParDo(RandomizeShard(
            self._config, self._distribution, self._seed, batch_rows(self._config))
        ).with_outputs("truth", main="reports")
        # out.reports: ReportBatch(block[int64, b], seed[int64, b], values[b, w]); out.truth: int64[k]
        truth = out.truth | "SumTruth" >> beam.CombineGlobally(SumArrays((k,)))
        return {"reports": out.reports, "truth": truth}


@beam.typehints.with_input_types(tuple[int, int])
class EvolveShard(beam.DoFn):
    """(shard, users in shard) -> ``(round, ReportBatch)`` for every round (main), ``(round,
    int64[k] true counts)`` (``truth``) and the shard's ``int64[cap + 1]`` histogram of distinct
    memo keys per user after the last round (``keys``).

    The shard holds its users' state for all rounds in one ``MemoStore`` (memoized permanent
    responses, public state, ledger): round 0 draws every user's item from the distribution; in
    each later round a user keeps its item with probability ``1 − change_rate``, else draws a
    new one from the distribution. ``np.random.default_rng([seed, shard])`` per shard.
    """

    def __init__(self, config: CollectionConfig, distribution: Distribution, seed: int,
                 rounds: int, change_rate: float, rows: int):
        self._config_json = config.to_json(indent=None)
        self._distribution = distribution
        self._seed, self._rounds, self._change = seed, rounds, change_rate
        self._rows = rows

    def setup(self):
        self._protocol = CollectionConfig.from_json(self._config_json).protocol
        cdf = np.cumsum(self._distribution.probabilities(self._protocol.k))
        self._cdf = cdf / cdf[-1]

    def process(self, element: tuple[int, int]) -> Iterator:
        from privfreq.protocols.longitudinal_client import MemoStore

        shard, m = element
        proto = self._protocol
        k = proto.k
        rng = np.random.default_rng([self._seed, shard])

        def draw(size):
            return np.minimum(np.searchsorted(self._cdf, rng.random(size), side="right"), k - 1)

        store = MemoStore(proto)
        users = store.add_users(m, rng)
        items = draw(m)
        for r in range(self._rounds):
            if r:
                move = np.flatnonzero(rng.random(m) < self._change)
                items[move] = draw(len(move))
            yield pvalue.TaggedOutput("truth", (r, np.bincount(items, minlength=k)))
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
                 rounds: int, change_rate: float, shard_size: int = SHARD_SIZE):
        super().__init__()
        if not getattr(config.protocol, "longitudinal", False):
            raise ValueError(f"simulate --rounds: protocol {config.protocol_id!r} is not "
                             f"longitudinal (lgrr, losue, lsue, loloha, biloloha, dbitflip)")
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"simulate: rounds must be an integer >= 1, got {rounds!r}")
        if not 0.0 <= change_rate <= 1.0:
            raise ValueError(f"simulate: change rate must be in [0, 1], got {change_rate}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"simulate: n must be an integer >= 1, got {n!r}")
        self._args = (config, n, distribution, seed, rounds, change_rate, shard_size)

    def expand(self, pbegin):
        config, n, distribution, seed, rounds, change_rate, shard_size = self._args
        proto = config.protocol
        out = (pbegin
               | "Shards" >> beam.Create(shard_sizes(n, shard_size))
               | "SpreadShards" >> beam.Reshuffle()
               | "Evolve" >> beam.ParDo(EvolveShard(config, distribution, seed, rounds,
                                                    change_rate, batch_rows(config))
                                        ).with_outputs("truth", "keys", main="reports"))
        truth = out.truth | "SumTruth" >> beam.CombinePerKey(SumArrays((proto.k,)))
        keys = out.keys | "SumKeys" >> beam.CombineGlobally(
            SumArrays((proto.memo_key_count + 1,)))
        return {"reports": out.reports, "truth": truth, "keys": keys}
