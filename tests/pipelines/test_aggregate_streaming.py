"""``privfreq aggregate --streaming``: the file-watching source end to end on the in-process
FnApiRunner (files appearing while the job runs, event times from the report field and from file
modification times, dead letters, per-window outputs equal to batch aggregates of each window's
reports), the message decoding shared by Pub/Sub and Kafka, and the graphs those two sources build
(they cannot be reached from this machine, so they are constructed, never run)."""
from __future__ import annotations

import glob
import io
import json
import os
import threading
import time

import apache_beam as beam
import fastavro
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.window import TimestampedValue

from privfreq import schemas
from privfreq.pipelines import aggregate, aggregate_streaming as agg_s
from privfreq.pipelines.cli import main as cli_main
from privfreq.protocols.config import CollectionConfig
from privfreq.transforms.parse import INVALID, STATS, ParseReports
from privfreq.transforms.streaming import (DecodeMessages, PollFiles, WindowedEstimates,
                                           bucket_ms, window_dir_name)

# Noisy GRR (ε = 1): equal estimates then mean equal counts, not just the true frequencies.
CONFIG = CollectionConfig("grr", {"k": 6, "epsilon": 1.0})
W = 60                      # window seconds
T0 = 1_699_999_980          # 2023-11-14T22:13:00Z, a multiple of W: windows [T0, T0+W), [T0+W, ...)


def _records(items, seed, event_times=None):
    p = CONFIG.protocol
    batch = p.randomize(np.asarray(items, dtype=np.int64), np.random.default_rng(seed))
    out = []
    for i in range(len(batch)):
        j = int(batch.block[i])
        rec = {"config_fingerprint": CONFIG.fingerprint, "protocol": p.protocol_id, "block": j,
               "seed": int(batch.seed[i]),
               "payload": p.encode_payloads(j, batch.values[i:i + 1]).tobytes()}
        if event_times is not None:
            rec["event_time"] = event_times[i]
        out.append(rec)
    return out


def _avro(records, full_schema: bool) -> bytes:
    buf = io.BytesIO()
    fastavro.writer(buf, schemas.report_schema(optional_fields=full_schema), records)
    return buf.getvalue()


def _drop(directory, name, data: bytes, mtime: float) -> None:
    """Make ``name`` appear whole (written elsewhere, then renamed into the watched pattern)."""
    tmp = os.path.join(directory, f".{name}.partial")
    with open(tmp, "wb") as f:
        f.write(data)
    os.utime(tmp, (mtime, mtime))
    os.replace(tmp, os.path.join(directory, name))


def _json(path):
    with open(path) as f:
        return json.load(f)


def _avro_rows(path):
    with open(path, "rb") as f:
        return list(fastavro.reader(f))


def _batch_estimate(tmp_path, name, records):
    """The batch aggregate (``privfreq aggregate``) of ``records``: its estimates and summary."""
    d = tmp_path / f"batch-{name}"
    d.mkdir()
    (d / "r.avro").write_bytes(_avro(records, full_schema=False))
    out = aggregate.run(["--config", str(tmp_path / "config.json"), "--input",
                         str(d / "r.avro"), "--output", str(tmp_path / f"batch-out-{name}")])
    return (pq.read_table(f"{out}/estimates.parquet").column("estimate").to_numpy(),
            _json(f"{out}/summary.json"))


def test_file_watching_stream_equals_batch_per_window(tmp_path):
    assert T0 % W == 0
    w0, w1 = T0, T0 + W
    CONFIG.save(str(tmp_path / "config.json"))
    watched = tmp_path / "incoming"
    watched.mkdir()
    # a: version-1 writer (no event_time): the file's modification time places it in window 0.
    a = _records([0, 1, 1, 2, 3, 5] * 5, seed=1)
    _drop(watched, "a.avro", _avro(a, False), mtime=T0 + 50)
    # b: event times in both windows, and some null (-> the file's mtime, window 1).
    b_times = [(T0 + 3 * i) * 1000 if i % 5 else None for i in range(40)]
    b = _records(np.arange(40) % 6, seed=2, event_times=b_times)
    # c: one report of another config (a dead letter) among good ones, all in window 1.
    c = _records([4, 4, 5], seed=3, event_times=[(T0 + 110) * 1000] * 3)
    c[1] = {**c[1], "config_fingerprint": "0123456789abcdef"}

    def later():  # files that appear while the job is watching
        time.sleep(0.4)
        _drop(watched, "b.avro", _avro(b, True), mtime=T0 + 90)
        time.sleep(0.4)
        _drop(watched, "c.avro", _avro(c, True), mtime=T0 + 90)

    writer = threading.Thread(target=later)
    writer.start()
    out = tmp_path / "live"
    try:
        cli_main(["aggregate", "--streaming", "--config", str(tmp_path / "config.json"),
                  "--input", str(watched / "*.avro"), "--output", str(out),
                  "--window-seconds", str(W), "--poll-interval", "0.1",
                  "--max-files", "3", "--max-duration", "120"])
    finally:
        writer.join()

    # Expected window contents, by event time (None -> mtime T0 + 90 -> window 1).
    in_w0 = list(a) + [r for r, t in zip(b, b_times) if t is not None and t < w1 * 1000]
    in_w1 = ([r for r, t in zip(b, b_times) if t is None or t >= w1 * 1000]
             + [c[0], c[2]])
    names = sorted(os.path.basename(p) for p in glob.glob(str(out / "windows" / "*")))
    assert names == [window_dir_name(w0, w0 + W, 0), window_dir_name(w1, w1 + W, 0)]
    assert names[0] == "20231114T221300.000Z-20231114T221400.000Z-pane0"
    assert not glob.glob(str(out / "windows" / ".*"))  # no staging leftovers
    for name, (start, expected) in zip(names, [(w0, in_w0), (w1, in_w1)]):
        got = pq.read_table(str(out / "windows" / name / "estimates.parquet"))
        summary = _json(out / "windows" / name / "summary.json")
        batch_est, batch_summary = _batch_estimate(tmp_path, name, expected)
        np.testing.assert_array_equal(got.column("estimate").to_numpy(), batch_est)
        assert summary["n_reports_in_window"] == summary["n_accepted"] == len(expected)
        assert summary["window"]["start"] == start and summary["window"]["timing"] == "ON_TIME"
        assert summary["top_items"] == batch_summary["top_items"]
    s1 = _json(out / "windows" / names[1] / "summary.json")
    assert s1["n_read"] == len(in_w1) + 1 and s1["rejected_by_reason"] == {
        "FINGERPRINT_MISMATCH": 1}
    dead = [r for p in glob.glob(str(out / "dead_letters" / "*.avro")) for r in _avro_rows(p)]
    assert [d["reason"] for d in dead] == ["FINGERPRINT_MISMATCH"]
    assert dead[0]["source"].startswith(str(watched / "c.avro") + "@")


def test_poll_watcher_stops_after_max_duration(tmp_path):
    (tmp_path / "x.avro").write_bytes(b"")
    t0 = time.monotonic()
    found = list(PollFiles(0.05, 0.3, None).process(str(tmp_path / "*.avro")))
    assert 0.25 <= time.monotonic() - t0 < 5
    assert [os.path.basename(m.path) for m in found] == ["x.avro"]
    # max_files ends the watch as soon as enough files were seen
    assert len(list(PollFiles(10, None, 1).process(str(tmp_path / "*.avro")))) == 1


_OUT: list = []  # collected by the in-process runner (module-level functions: not copied)


def _collect_pane(d):
    _OUT.append((d["window_start"], d["n"], d["stats"]))


def _collect_stamped(cols, ts=beam.DoFn.TimestampParam):
    _OUT.append((len(cols), int(ts.micros // 1_000_000)))


def test_decode_messages_containers_single_records_and_garbage():
    """Pub/Sub and Kafka payloads: a container with event times, one schemaless v1 record (the
    message timestamp is its event time) and garbage (a dead letter), through Parse + windows."""
    recs = _records([0, 1, 2, 2], seed=5, event_times=[(T0 + 1) * 1000] * 3 + [(T0 + 100) * 1000])
    single = _records([3], seed=6)[0]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schemas.report_schema(), single)
    messages = [TimestampedValue(_avro(recs, True), T0 + 500),
                TimestampedValue(buf.getvalue(), T0 + 2),
                TimestampedValue(b"\x00garbage", T0 + 3)]
    _OUT.clear()
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        cols = (p | beam.Create(messages) | beam.ParDo(
            DecodeMessages("pubsub:test", bucket_ms(W, None), CONFIG.protocol.batch_rows)))
        parsed = cols | beam.ParDo(ParseReports(CONFIG)).with_outputs(INVALID, STATS,
                                                                       main="valid")
        _ = ((parsed.valid, parsed[STATS]) | beam.Flatten() | WindowedEstimates(CONFIG, W)
             | beam.Map(_collect_pane))
    got = sorted(_OUT, key=lambda x: x[0])
    assert [(s, n) for s, n, _ in got] == [(T0, 4), (T0 + W, 1)]
    assert got[0][2] == {"read": 5, "accepted": 4, "rejected": {"MALFORMED_RECORD": 1},
                         "regions": {}}


def _args(*extra):
    args, beam_args = agg_s.parser().parse_known_args(
        ["--streaming", "--config", "c.json", "--output", "/tmp/unused"] + list(extra))
    agg_s.check_args(args)
    return args


def test_pubsub_source_builds_the_streaming_graph():
    args = _args("--source", "pubsub", "--pubsub-subscription", "projects/my-project/subscriptions/reports",
                 "--pubsub-timestamp-attribute", "event_ms", "--window-seconds", "600",
                 "--period-seconds", "60", "--allowed-lateness-seconds", "3600")
    p = beam.Pipeline(options=PipelineOptions(["--streaming"]))
    agg_s.build(p, CONFIG, args, watcher="poll")
    proto = p.to_runner_api()
    labels = {t.unique_name: t for t in proto.components.transforms.values()}
    read = [t for name, t in labels.items() if name.endswith("ReadPubSub")]
    assert read, sorted(labels)
    from apache_beam.portability.api import beam_runner_api_pb2
    payloads = [t.spec.payload for t in proto.components.transforms.values()
                if t.spec.urn == "beam:transform:pubsub_read:v1"]
    assert len(payloads) == 1
    pl = beam_runner_api_pb2.PubSubReadPayload.FromString(payloads[0])
    assert pl.subscription == "projects/my-project/subscriptions/reports" and pl.timestamp_attribute == "event_ms"
    for step in ("DecodeMessages", "Parse", "DeadLetters", "Windows/Window", "WritePanes"):
        assert any(name == step or name.endswith("/" + step) or name.startswith(step)
                   for name in labels), step
    window = [t for name, t in labels.items() if name.endswith("Windows/Window")][0]
    pcoll = proto.components.pcollections[list(window.outputs.values())[0]]
    strategy = proto.components.windowing_strategies[pcoll.windowing_strategy_id]
    assert strategy.allowed_lateness == 3_600_000
    assert strategy.accumulation_mode == beam_runner_api_pb2.AccumulationMode.ACCUMULATING
    beam.Pipeline.from_runner_api(proto, p.runner, p._options)  # round-trips


def test_kafka_source_options_and_graph(monkeypatch):
    args = _args("--source", "kafka", "--kafka-bootstrap-servers", "broker:9092",
                 "--kafka-topic", "reports", "more", "--kafka-group-id", "privfreq",
                 "--kafka-consumer-config", "auto.offset.reset=earliest",
                 "--kafka-expansion-service", "localhost:8097")
    read = agg_s.kafka_read(args)
    from apache_beam.io.kafka import ReadFromKafka
    assert isinstance(read, ReadFromKafka)
    assert read._expansion_service == "localhost:8097"
    from apache_beam.coders import RowCoder
    from apache_beam.portability.api import external_transforms_pb2
    payload = external_transforms_pb2.ExternalConfigurationPayload.FromString(read._payload)
    cfg = RowCoder(payload.schema).decode(payload.payload)
    assert read._urn == "beam:transform:org.apache.beam:kafka_read_without_metadata:v1"
    assert dict(cfg.consumer_config) == {"bootstrap.servers": "broker:9092",
                                         "group.id": "privfreq", "auto.offset.reset": "earliest"}
    assert list(cfg.topics) == ["reports", "more"] and cfg.timestamp_policy == "CreateTime"
    # The expansion needs Java; stand in a Create of (key, value) records and run the rest.
    recs = _records([1, 1, 4], seed=7)
    values = []
    for r in recs:
        b = io.BytesIO()
        fastavro.schemaless_writer(b, schemas.report_schema(), r)
        values.append(TimestampedValue((b"k", b.getvalue()), T0))
    monkeypatch.setattr(agg_s, "kafka_read", lambda a: beam.Create(values))
    p = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    out = agg_s.build_source(p, args, bucket_ms(W, None), CONFIG, "poll")
    _OUT.clear()
    _ = out | beam.Map(_collect_stamped)
    p.run().wait_until_finish()
    assert sorted(_OUT) == [(1, T0)] * 3


def test_match_continuously_watcher_graph():
    args = _args("--input", "/data/*.avro", "--max-duration", "60")
    p = beam.Pipeline(options=PipelineOptions(["--streaming"]))
    agg_s.build(p, CONFIG, args, watcher="match-continuously")
    names = [t.unique_name for t in p.to_runner_api().components.transforms.values()]
    assert any("MatchContinuously" in n for n in names)
    with pytest.raises(ValueError, match="--max-files needs --watcher poll"):
        agg_s.choose_watcher(_args("--input", "x", "--max-files", "2",
                                   "--watcher", "match-continuously"), PipelineOptions([]))


@pytest.mark.parametrize("extra, message", [
    ([], "needs --input"),
    (["--source", "pubsub"], "exactly one of"),
    (["--source", "kafka", "--kafka-topic", "t"], "--kafka-bootstrap-servers"),
    (["--input", "x", "--window-seconds", "0"], "window_seconds"),
    (["--input", "x", "--poll-interval", "0"], "--poll-interval"),
])
def test_bad_streaming_flags(extra, message):
    with pytest.raises(ValueError, match=message):
        _args(*extra)
