"""WindowedEstimates under TestStream: out-of-order and late reports, accumulating panes, reports
beyond the allowed lateness dropped, sliding windows. BundleBasedDirectRunner (in-process; the
default DirectRunner may switch to Prism, which downloads a binary)."""
import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_stream
from apache_beam.transforms.window import TimestampedValue

from _tf_helpers import GRR_EXACT
from privfreq.transforms.streaming import WindowedEstimates

K = GRR_EXACT.protocol.k
_OUT = []  # panes collected by the in-process runner (a global: DoFns are pickled)


def _batch(items, seed):
    return GRR_EXACT.protocol.randomize(np.asarray(items, dtype=np.int64),
                                        np.random.default_rng(seed))


def _collect(pane):
    _OUT.append(pane)


def _run(stream, **kw):
    _OUT.clear()
    opts = PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])
    with beam.Pipeline(options=opts) as p:
        _ = p | stream | WindowedEstimates(GRR_EXACT, **kw) | beam.Map(_collect)
    return sorted(_OUT, key=lambda d: (d["window_start"], d["pane_index"]))


def _freq(items):
    return np.bincount(items, minlength=K) / len(items)


def test_fixed_windows_late_and_out_of_order():
    stream = (test_stream.TestStream()
              .advance_watermark_to(0)
              .add_elements([TimestampedValue(_batch([0, 0, 1], 1), 1),
                             TimestampedValue(_batch([2], 2), 12),
                             TimestampedValue(_batch([3, 3], 3), 5)])   # out of order, on time
              .advance_watermark_to(20)                                 # fires [0,10) and [10,20)
              .add_elements([TimestampedValue(_batch([1], 4), 4)])      # late, within lateness
              .advance_watermark_to(50)                                 # [0,10) expires at 40
              .add_elements([TimestampedValue(_batch([7, 7, 7], 5), 2)])  # too late: dropped
              .advance_watermark_to_infinity())
    panes = _run(stream, window_seconds=10, allowed_lateness_seconds=30)
    got = [(d["window_start"], d["window_end"], d["timing"], d["n"]) for d in panes]
    assert got == [(0, 10, "ON_TIME", 5), (0, 10, "LATE", 6), (10, 20, "ON_TIME", 1)]
    # ε = 60: no noise, so each pane's estimate is its window's empirical frequencies; the late
    # pane accumulates (on-time reports + the late one), the dropped reports count nowhere.
    for d, items in zip(panes, [[0, 0, 1, 3, 3], [0, 0, 1, 3, 3, 1], [2]]):
        np.testing.assert_allclose(d["estimate"].frequencies, _freq(items), atol=1e-9)


def test_sliding_windows_count_each_report_in_every_covering_window():
    stream = (test_stream.TestStream()
              .advance_watermark_to(0)
              .add_elements([TimestampedValue(_batch([4], 1), 2),
                             TimestampedValue(_batch([5, 5], 2), 7)])
              .advance_watermark_to_infinity())
    panes = _run(stream, window_seconds=10, period_seconds=5)
    got = {(d["window_start"], d["window_end"]): d for d in panes}
    assert sorted(got) == [(-5, 5), (0, 10), (5, 15)]
    assert [got[w]["n"] for w in sorted(got)] == [1, 3, 2]
    np.testing.assert_allclose(got[(0, 10)]["estimate"].frequencies, _freq([4, 5, 5]), atol=1e-9)
    assert all(d["timing"] == "ON_TIME" for d in panes)


@pytest.mark.parametrize("kw, message", [
    ({"window_seconds": 0}, "window_seconds"),
    ({"window_seconds": 10, "period_seconds": 20}, "period_seconds"),
    ({"window_seconds": 10, "allowed_lateness_seconds": -1}, "allowed_lateness"),
])
def test_bad_window_parameters(kw, message):
    with pytest.raises(ValueError, match=message):
        WindowedEstimates(GRR_EXACT, **kw)


def test_counts_and_stats_combiner_merges_any_sharding_in_any_order():
    """CountReportsAndStats: the batches and tallies split into random shards, each shard added
    in its own accumulator, the accumulators merged in a random order (nested, as fanout does)
    give bit-identical counts and equal tallies."""
    from privfreq.protocols.config import CollectionConfig
    from privfreq.transforms.streaming import CountReportsAndStats

    config = CollectionConfig("mss", {"k": 30, "epsilon": 1.0, "moduli": [29, 31]})
    rng = np.random.default_rng(11)
    elements = []
    for i in range(24):
        elements.append(config.protocol.randomize(rng.integers(0, 30, int(rng.integers(1, 60))),
                                                  rng))
        elements.append({"read": i + 2, "accepted": i, "rejected": {"BAD_SEED": 2}})
    fn = CountReportsAndStats(config)
    fn.setup()

    def combine(order_rng):
        order = order_rng.permutation(len(elements))
        cuts = np.sort(order_rng.choice(np.arange(1, len(elements)), 5, replace=False))
        accs = []
        for shard in np.split(order, cuts):
            acc = fn.create_accumulator()
            for i in shard:
                acc = fn.add_input(acc, elements[i])
            accs.append(acc)
        perm = order_rng.permutation(len(accs))
        accs = [accs[i] for i in perm]
        half = len(accs) // 2
        merged = fn.merge_accumulators([fn.merge_accumulators(accs[:half]),
                                        fn.merge_accumulators(accs[half:])])
        return fn.extract_output(merged)

    (ref_counts, ref_stats) = combine(np.random.default_rng(0))
    assert ref_stats["read"] == sum(i + 2 for i in range(24))
    for seed in range(1, 6):
        counts, stats = combine(np.random.default_rng(seed))
        np.testing.assert_array_equal(counts.counts, ref_counts.counts)
        np.testing.assert_array_equal(counts.n_block, ref_counts.n_block)
        assert stats == ref_stats
