"""Event-time windowed estimates for streaming reports: fixed or sliding windows, allowed lateness
and accumulating panes. Thin adapter: counting and decoding are the protocol's (via CountReports).

Input: ``PCollection[ReportBatch]`` whose elements carry event timestamps (e.g. the publish time of
a Pub/Sub message holding a batch of reports), optionally mixed with parse tallies (the ``stats``
dicts of ``transforms.parse``, stamped like the reports they count), so each window also knows how
many reports were read and rejected. Output: one dict per fired pane::

    {"window_start": float s, "window_end": float s, "timing": "EARLY"|"ON_TIME"|"LATE",
     "pane_index": int, "n": reports in the window so far, "estimate": Estimate,
     "counts": Counts, "stats": {"read", "accepted", "rejected": {reason: n}}}

Panes accumulate: a late pane's estimate covers every report of its window seen so far, so the
latest pane of a window is always its best estimate. Reports later than ``allowed_lateness`` after
the window's end are dropped by the runner (they never reach a count).
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Duration

from typing import Any, Iterable, Tuple, Union

from privfreq.protocols.base import Counts, ReportBatch
from privfreq.protocols.config import CollectionConfig
from privfreq.transforms.estimate import CountReports, decode_counts
from privfreq.transforms.parse import empty_stats, merge_stats

__all__ = ["CountReportsAndStats", "WindowedEstimates"]


@beam.typehints.with_input_types(Union[ReportBatch, dict])
@beam.typehints.with_output_types(Tuple[Counts, dict])
class CountReportsAndStats(beam.CombineFn):
    """ReportBatch and parse-tally dicts -> (merged Counts, summed tallies). The counting is
    CountReports' (the protocol's); tallies are summed with ``merge_stats``."""

    def __init__(self, config: CollectionConfig):
        self._counts = CountReports(config)

    def setup(self, *args, **kwargs):
        self._counts.setup()

    def create_accumulator(self):
        return self._counts.create_accumulator(), empty_stats()

    def add_input(self, acc, element):
        counts, stats = acc
        if isinstance(element, dict):
            return counts, merge_stats([stats, element])
        return self._counts.add_input(counts, element), stats

    def merge_accumulators(self, accumulators: Iterable):
        accs = list(accumulators)
        counts = self._counts.merge_accumulators([a[0] for a in accs])
        return counts, merge_stats([a[1] for a in accs])

    def extract_output(self, acc):
        return acc


def _pane_estimate(acc, config_json: str, w=beam.DoFn.WindowParam,
                   pane=beam.DoFn.PaneInfoParam) -> dict[str, Any]:
    counts, stats = acc
    timing = {0: "EARLY", 1: "ON_TIME", 2: "LATE"}.get(pane.timing, str(pane.timing))
    return {"window_start": float(w.start), "window_end": float(w.end), "timing": timing,
            "pane_index": int(pane.index), "n": counts.n, "counts": counts.copy(),
            "stats": stats, "estimate": decode_counts(counts.copy(), config_json)}


class WindowedEstimates(beam.PTransform):
    """PCollection[ReportBatch | stats dict] (timestamped) -> one estimate dict per window pane.

    Args:
        config: the collection config.
        window_seconds: window length.
        period_seconds: sliding period (``None``: fixed windows).
        allowed_lateness_seconds: how long after a window's end late reports still update it; each
            late arrival fires a new accumulating pane.
    """

    def __init__(self, config: CollectionConfig, window_seconds: float,
                 period_seconds: float | None = None, allowed_lateness_seconds: float = 0):
        super().__init__()
        if not window_seconds > 0:
            raise ValueError(f"WindowedEstimates: window_seconds must be > 0, got {window_seconds}")
        if period_seconds is not None and not 0 < period_seconds <= window_seconds:
            raise ValueError(f"WindowedEstimates: period_seconds must be in (0, window_seconds], "
                             f"got {period_seconds}")
        if not allowed_lateness_seconds >= 0:
            raise ValueError(f"WindowedEstimates: allowed_lateness_seconds must be >= 0, got "
                             f"{allowed_lateness_seconds}")
        self._config = config
        self._windows = (window.FixedWindows(window_seconds) if period_seconds is None
                         else window.SlidingWindows(window_seconds, period_seconds))
        self._lateness = allowed_lateness_seconds

    def expand(self, batches):
        windowed = batches | "Window" >> beam.WindowInto(
            self._windows,
            trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
            accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
            allowed_lateness=Duration.of(self._lateness))
        counts = windowed | "CountReports" >> beam.CombineGlobally(
            CountReportsAndStats(self._config)).without_defaults()
        # pcoll: one (Counts, stats) per window pane (accumulated over the window's panes)
        return counts | "Decode" >> beam.Map(_pane_estimate, self._config.to_json(indent=None))
