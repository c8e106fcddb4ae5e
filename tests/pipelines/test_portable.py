"""Portable execution: the aggregate job through the PortableRunner against Beam's embedded job
service (the path Flink, Spark and Dataflow Runner v2 take), a multi-process run over several input
files, and every pipeline's graph serialised to the Runner API proto."""
import os
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.pipeline import Pipeline
from apache_beam.runners.runner import PipelineResult, PipelineRunner, PipelineState

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "transforms"))
from _tf_helpers import records_for, write_avro  # noqa: E402

from privfreq.pipelines import cli, evaluate  # noqa: E402
from privfreq.protocols import totals  # noqa: E402
from privfreq.protocols.config import CollectionConfig  # noqa: E402

# Noisy MSS with three blocks: equality below must come from exact integer combining on every runner.
MSS = CollectionConfig("mss", {"k": 40, "epsilon": 2.0, "moduli": [11, 13, 19]})


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    d = tmp_path_factory.mktemp("reports")
    MSS.save(d / "config.json")
    recs = records_for(MSS, np.random.default_rng(2).integers(0, 40, 1200), seed=3)
    for i in range(4):
        write_avro(d / f"r{i}.avro", recs[i * 300:(i + 1) * 300], sync_interval=100)
    return d


def _aggregate(reports, out, *runner):
    assert cli.main(["aggregate", "--config", str(reports / "config.json"), "--input",
                     str(reports / "r*.avro"), "--output", str(out), *runner]) == 0
    return pq.read_table(os.path.join(out, "estimates.parquet")).column("estimate").to_numpy()


@pytest.fixture(scope="module")
def in_process(reports):
    return _aggregate(reports, reports / "fnapi", "--runner=FnApiRunner")


def test_portable_runner_embedded_job_service(reports, in_process):
    est = _aggregate(reports, reports / "portable", "--runner=PortableRunner",
                     "--job_endpoint=embed", "--environment_type=LOOPBACK")
    np.testing.assert_array_equal(est, in_process)


def test_multi_process_run_over_several_files(reports, in_process):
    est = _aggregate(reports, reports / "multi", "--runner=FnApiRunner",
                     "--direct_running_mode=multi_processing", "--direct_num_workers=2")
    np.testing.assert_array_equal(est, in_process)


class ProtoOnlyRunner(PipelineRunner):
    """Serialises the pipeline to the Runner API proto, rebuilds it from the proto, records it and
    executes nothing (so the graphs of every entry point can be checked without running them)."""

    seen: list = []

    def run_pipeline(self, pipeline, options):
        proto = pipeline.to_runner_api()
        assert proto.root_transform_ids
        Pipeline.from_runner_api(proto, pipeline.runner, options)
        ProtoOnlyRunner.seen.append(proto)
        return PipelineResult(PipelineState.DONE)


PROTO_RUNNER = f"--runner={__name__}.ProtoOnlyRunner"


def _labels(proto):
    return {t.unique_name for t in proto.components.transforms.values()}


def test_every_pipeline_serialises_to_runner_api(reports, tmp_path):
    ProtoOnlyRunner.seen.clear()
    cfg = str(reports / "config.json")
    t = totals.Totals(MSS, MSS.protocol.create_accumulator())
    totals.save(tmp_path / "t0.npz", t)
    cli.main(["aggregate", "--config", cfg, "--input", str(reports / "r*.avro"),
              "--output", str(tmp_path / "a"), PROTO_RUNNER])
    # --totals-out publishes a file the proto-only run does not produce: only --totals-in here.
    cli.main(["aggregate", "--config", cfg, "--input", str(reports / "r*.avro"),
              "--output", str(tmp_path / "b"), "--totals-in", str(tmp_path / "t0.npz"),
              PROTO_RUNNER])
    cli.main(["simulate", "--protocol", "grr", "--k", "8", "--epsilon", "1", "--n", "100",
              "--output", str(tmp_path / "s"), PROTO_RUNNER])
    evaluate.run(["--protocols", "grr,ss", "--k", "8", "--epsilons", "1", "--distributions",
                  "uniform", "--trials", "1", "--n", "100", "--output", str(tmp_path / "e"),
                  PROTO_RUNNER])
    assert len(ProtoOnlyRunner.seen) == 4
    plain, merged, sim, ev = map(_labels, ProtoOnlyRunner.seen)
    assert {"Parse", "CountReports", "Decode", "WriteResults"} <= plain
    assert {"MergeTotalsIn", "Decode", "WriteResults"} <= merged
    assert {"Simulate", "Estimate"} <= sim
    assert {"CreateTrials", "Evaluate", "WriteOutputs"} <= ev
