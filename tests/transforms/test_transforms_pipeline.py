"""End-to-end TestPipeline runs of the transforms (in-process FnApiRunner, offline)."""
import pickle

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from _tf_helpers import GRR_EXACT, MSS_EXACT, SS_EXACT, records_for, write_avro
from privfreq.transforms.estimate import CountReports, EstimateFrequencies
from privfreq.transforms.io import ReadReportFiles
from privfreq.transforms.parse import INVALID, STATS, ParseReports, merge_stats
from privfreq.transforms.simulate import Distribution, SimulateReports

RUNNER = ["--runner=FnApiRunner"]


def _pipeline():
    return test_pipeline.TestPipeline(options=PipelineOptions(RUNNER), blocking=True)


def _exact(expected, atol=1e-9):
    def check(actual):
        (est,) = actual
        np.testing.assert_allclose(est.frequencies, expected, atol=atol)
    return check


@pytest.mark.parametrize("config", [GRR_EXACT, SS_EXACT, MSS_EXACT], ids=lambda c: c.protocol_id)
def test_no_noise_estimate_is_exact(config):
    p = config.protocol
    rng = np.random.default_rng(5)
    items = rng.integers(0, p.k, 3000)
    batches = [p.randomize(items[i:i + 500], rng) for i in range(0, 3000, 500)]
    if config.protocol_id == "mss":
        # Each MSS user reports one block, so even without noise ĝ_j is the item distribution of
        # the users who drew j: not the exact counts. The pipeline must equal the local decode.
        acc = p.create_accumulator()
        for b in batches:
            p.add_reports(acc, b)
        expected = p.estimate(acc).frequencies
    else:
        expected = np.bincount(items, minlength=p.k) / 3000
    with _pipeline() as pl:
        est = pl | beam.Create(batches) | EstimateFrequencies(config, fanout=3)
        assert_that(est, _exact(expected, 1e-9))


def test_count_reports_merge_contract():
    p = MSS_EXACT.protocol
    rng = np.random.default_rng(1)
    batches = [p.randomize(rng.integers(0, p.k, 100), rng) for _ in range(6)]
    fn = pickle.loads(pickle.dumps(CountReports(MSS_EXACT)))
    fn.setup()
    single = fn.create_accumulator()
    for b in batches:
        single = fn.add_input(single, b)
    shards = [fn.add_input(fn.create_accumulator(), b) for b in batches]
    first = shards[3]
    merged = fn.merge_accumulators(s for s in [shards[3], shards[0], *shards[4:], *shards[1:3]])
    assert merged is first  # only the first accumulator is mutated
    np.testing.assert_array_equal(merged.counts, single.counts)
    np.testing.assert_array_equal(merged.n_block, single.n_block)
    assert merged.counts.dtype == np.int64
    assert len(pickle.dumps(CountReports(MSS_EXACT))) < 2000  # no protocol tables pickled


def test_files_with_bad_reports_and_a_truncated_file(tmp_path):
    items = np.arange(240) % 8
    good = records_for(GRR_EXACT, items)
    write_avro(tmp_path / "a.avro", good[:120], sync_interval=64)
    bad = [{**good[0], "config_fingerprint": "ffffffffffffffff"},
           {**good[1], "payload": b"\x09"},            # value 9 >= k = 8
           {**good[2], "block": 1}]
    write_avro(tmp_path / "b.avro", good[120:200] + bad)
    data = (tmp_path / "c.avro")
    write_avro(data, good[200:], sync_interval=64)
    raw = data.read_bytes()
    data.write_bytes(raw[:len(raw) - 20])             # truncated in its last block
    (tmp_path / "d.avro").write_bytes(b"this is not avro at all")

    with _pipeline() as pl:
        cols = pl | ReadReportFiles(str(tmp_path / "*.avro"), batch_rows=50)
        parsed = cols | beam.ParDo(ParseReports(GRR_EXACT)).with_outputs(INVALID, STATS,
                                                                          main="valid")
        stats = parsed[STATS] | "Sum" >> beam.CombineGlobally(merge_stats)
        reasons = (parsed[INVALID] | beam.FlatMap(lambda d: d)
                   | beam.Map(lambda d: d["reason"]))
        est = parsed.valid | EstimateFrequencies(GRR_EXACT)

        def check_stats(actual):
            (s,) = actual
            assert s["accepted"] + sum(s["rejected"].values()) == s["read"]
            lost = s["rejected"].pop("TRUNCATED_RECORDS")  # the cut block's declared rest
            assert s["rejected"] == {"FINGERPRINT_MISMATCH": 1, "VALUE_OUT_OF_RANGE": 1,
                                     "BLOCK_OUT_OF_RANGE": 1, "UNREADABLE_FILE": 1}
            assert lost >= 1 and s["accepted"] + lost == 240  # every report of c.avro counted
            assert s["regions"] == {"TRUNCATED_RECORDS": 1, "UNREADABLE_FILE": 1}

        assert_that(stats, check_stats, label="stats")
        assert_that(reasons, equal_to(["FINGERPRINT_MISMATCH", "VALUE_OUT_OF_RANGE",
                                       "BLOCK_OUT_OF_RANGE", "TRUNCATED_RECORDS",
                                       "UNREADABLE_FILE"]), label="reasons")

        def check_est(actual):
            (e,) = actual
            assert e.diagnostics["n"] >= 200
            assert np.all(np.abs(e.frequencies * e.diagnostics["n"] - np.rint(
                e.frequencies * e.diagnostics["n"])) < 1e-6)  # exact integer counts
        assert_that(est, check_est, label="estimate")

    res = pl.run()  # TestPipeline(blocking=True) already ran; query its metrics
    counters = {c.key.metric.name: c.committed
                for c in res.metrics().query(MetricsFilter())["counters"]}
    assert counters["read"] == counters["accepted"] + counters["rejected"]
    assert counters["rejected_UNREADABLE_FILE"] == 1 and counters["rejected_TRUNCATED_RECORDS"] >= 1


def test_simulate_reports_keeps_truth_and_is_exact_without_noise():
    n = 5000
    with _pipeline() as pl:
        sim = pl | SimulateReports(GRR_EXACT, n, Distribution.parse("zipf:1.0"), seed=4,
                                   shard_size=1500)
        est = sim["reports"] | EstimateFrequencies(GRR_EXACT)
        both = est | beam.Map(lambda e, t: (e.frequencies, t),
                              beam.pvalue.AsSingleton(sim["truth"]))

        def check(actual):
            (f_hat, truth) = actual[0]
            assert truth.sum() == n and truth[0] > truth[-1]
            np.testing.assert_allclose(f_hat, truth / n, atol=1e-9)
        assert_that(both, check)


def test_simulation_is_reproducible_for_a_seed():
    def counts(pl, label, seed):
        sim = pl | label >> SimulateReports(MSS_EXACT, 3000, Distribution.parse("uniform"),
                                            seed=seed, shard_size=1000)
        return sim["reports"] | f"{label}Count" >> beam.CombineGlobally(CountReports(MSS_EXACT))

    with _pipeline() as pl:
        a, b, c = counts(pl, "A", 9), counts(pl, "B", 9), counts(pl, "C", 10)
        same = a | beam.Map(lambda x, y, z: (np.array_equal(x.counts, y.counts),
                                             np.array_equal(x.counts, z.counts)),
                            beam.pvalue.AsSingleton(b), beam.pvalue.AsSingleton(c))
        assert_that(same, equal_to([(True, False)]))


@pytest.mark.parametrize("text,err", [("zipf", "exponent"), ("zipf:-1", ">= 0"),
                                      ("gauss", "zipf:S, spike, uniform"), ("spike:2", "spike")])
def test_distribution_errors_name_the_field(text, err):
    with pytest.raises(ValueError, match="distribution") as e:
        Distribution.parse(text)
    assert err in str(e.value)


def test_distribution_probabilities():
    assert Distribution.parse("spike").probabilities(5).tolist() == [1, 0, 0, 0, 0]
    z = Distribution.parse("zipf:2").probabilities(3)
    np.testing.assert_allclose(z, np.array([1, 1 / 4, 1 / 9]) / (1 + 1 / 4 + 1 / 9))
