"""Counting report batches and decoding the merged counts: thin adapters over the protocol."""

import time
from typing import Iterable

import apache_beam as beam
import numpy as np

from privfreq.protocols.base import Counts, Estimate, ReportBatch
from privfreq.protocols.config import CollectionConfig

__all__ = ["COMBINE_FANOUT", "CountReports", "EstimateFrequencies", "SumArrays", "decode_counts"]

# One dense count tensor (Σ m_j int64 for MSS: ~16 KB at k = 1024, ~350 KB at k = 22 000) is
# combined globally. Without fanout every batch would be added on a single worker; 16 intermediate
# keys let up to 16 workers add batches in parallel, and the final merge of 16 such vectors is a
# few microseconds to milliseconds — cheap at any k we plan for, so more fanout buys nothing.
# Measured (benchmarks/ingest.py setup, 10^7 GRR reports, in-process FnApiRunner, 2 threads): the
# count work is ~1% of the job, and fanout 4/16/64 cost 0.1-0.25 s more than none (one more shuffle
# stage) -- noise-level differences between 4, 16 and 64. Kept at 16 for distributed runners, where
# thousands of bundles each send one accumulator to the final merge; not raised, not lowered.
COMBINE_FANOUT = 16


@beam.typehints.with_input_types(ReportBatch)
@beam.typehints.with_output_types(Counts)
class CountReports(beam.CombineFn):
    """ReportBatch -> merged ``Counts``, delegating to the protocol (no protocol math here)."""

    def __init__(self, config: CollectionConfig):
        self._config_json = config.to_json(indent=None)  # small to pickle; rebuilt in setup()
        self._protocol = None

    def setup(self, *args, **kwargs):
        self._protocol = CollectionConfig.from_json(self._config_json).protocol

    @property
    def protocol(self):
        if self._protocol is None:  # runners that skip CombineFn.setup on some paths
            self.setup()
        return self._protocol

    def __getstate__(self):
        return {"_config_json": self._config_json, "_protocol": None}

    def create_accumulator(self) -> Counts:
        return self.protocol.create_accumulator()

    def add_input(self, acc: Counts, batch: ReportBatch) -> Counts:
        return self.protocol.add_reports(acc, batch)

    def merge_accumulators(self, accumulators: Iterable[Counts]) -> Counts:
        return self.protocol.merge(accumulators)  # mutates only the first accumulator

    def extract_output(self, acc: Counts) -> Counts:
        return acc


# Heavy hitters a discovery protocol's decode lists by default (aggregate/simulate --top).
DISCOVER_TOP = 20


def decode_counts(counts: Counts, config_json: str, top: int = DISCOVER_TOP) -> Estimate:
    """Merged counts -> raw estimate; records the wall time in ``diagnostics['decode_seconds']``.
    A discovery protocol (PEM) lists its ``top`` heavy hitters instead (``Estimate.items``)."""
    protocol = CollectionConfig.from_json(config_json).protocol
    t0 = time.perf_counter()
    if getattr(protocol, "discovers", False):
        est = protocol.heavy_hitters(counts, top=top)
    else:
        est = protocol.estimate(counts)
    seconds = time.perf_counter() - t0
    est.diagnostics = {**est.diagnostics, "decode_seconds": seconds}
    return est


def decode_round(kv: tuple[int, Counts], config_json: str, top: int = DISCOVER_TOP
                 ) -> tuple[int, Estimate, int]:
    """``(round, counts)`` -> ``(round, raw estimate, reports in the round)``."""
    r, counts = kv
    return r, decode_counts(counts, config_json, top), counts.n


class EstimateFrequencies(beam.PTransform):
    """PCollection[ReportBatch] -> PCollection[Estimate] with exactly one element (``top``: the
    heavy hitters a discovery protocol lists)."""

    def __init__(self, config: CollectionConfig, fanout: int = COMBINE_FANOUT,
                 top: int = DISCOVER_TOP):
        super().__init__()
        self._config = config
        self._fanout = fanout
        self._top = top

    def expand(self, batches):
        counts = (batches
                  | "CountReports" >> beam.CombineGlobally(
                      CountReports(self._config)).with_fanout(self._fanout))
        # pcoll: one Counts(counts[int64, count_shape], n_block[int64, n_blocks])
        return (counts
                | "Decode" >> beam.Map(decode_counts, self._config.to_json(indent=None), self._top)
                .with_output_types(Estimate))
        # pcoll: one Estimate(frequencies[float64, k], stderr[float64, k], diagnostics)


@beam.typehints.with_input_types(np.ndarray)
@beam.typehints.with_output_types(np.ndarray)
class SumArrays(beam.CombineFn):
    """Element-wise sum of equal-shape int64 arrays (``shape`` fixed; empty input gives zeros)."""

    def __init__(self, shape: tuple[int, ...]):
        self._shape = tuple(shape)

    def create_accumulator(self) -> np.ndarray:
        return np.zeros(self._shape, dtype=np.int64)

    def add_input(self, acc: np.ndarray, x: np.ndarray) -> np.ndarray:
        acc += x
        return acc

    def merge_accumulators(self, accumulators: Iterable[np.ndarray]) -> np.ndarray:
        it = iter(accumulators)
        acc = next(it)
        for a in it:
            acc += a
        return acc

    def extract_output(self, acc: np.ndarray) -> np.ndarray:
        return acc
