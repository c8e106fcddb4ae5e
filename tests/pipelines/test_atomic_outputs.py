"""An interrupted run leaves no partial output: every subcommand writes into a temporary location
and renames it into place. Each test makes a writer fail half-way through a file (or just before
the rename) and checks that no final output, or the previous one untouched, and no temporary
leftovers remain. Also: client randomness comes from OS entropy unless a seed is given."""
from __future__ import annotations

import os

import numpy as np
import pytest

from privfreq.pipelines import aggregate, audit, common, encode, evaluate, simulate
from privfreq.pipelines import config as config_cmd
from privfreq.protocols.config import CollectionConfig
from privfreq.transforms import outputs
from privfreq.transforms.streaming import WritePane

CONFIG = CollectionConfig("grr", {"k": 8, "epsilon": 1.0})


class Crash(RuntimeError):
    pass


def _crash_on_write(monkeypatch, fail_at: int):
    """outputs._write_bytes writes half of its data on call ``fail_at`` (1-based), then raises."""
    real = outputs._write_bytes
    calls = {"n": 0}

    def half(path, data):
        calls["n"] += 1
        if calls["n"] == fail_at:
            real(path, data[:len(data) // 2])
            raise Crash(f"simulated failure writing {path}")
        real(path, data)

    monkeypatch.setattr(outputs, "_write_bytes", half)
    return calls


def _listing(d) -> list[str]:
    return sorted(os.listdir(d))


def _reports(tmp_path):
    CONFIG.save(str(tmp_path / "config.json"))
    encode.encode_items(CONFIG, np.arange(200) % 8, str(tmp_path / "r.avro"), seed=1)


def test_aggregate_failure_mid_write_leaves_previous_output(tmp_path, monkeypatch):
    _reports(tmp_path)
    argv = ["--config", str(tmp_path / "config.json"), "--input", str(tmp_path / "r.avro"),
            "--output", str(tmp_path / "out")]
    aggregate.run(argv)
    before = {n: (tmp_path / "out" / n).read_bytes() for n in _listing(tmp_path / "out")}
    _crash_on_write(monkeypatch, fail_at=2)  # estimates.parquet written, estimates.png half
    with pytest.raises(Exception, match="simulated failure"):
        aggregate.run(argv)
    assert {n: (tmp_path / "out" / n).read_bytes() for n in _listing(tmp_path / "out")} == before
    assert _listing(tmp_path) == ["config.json", "out", "r.avro"]  # no .tmp-* staging left


def test_aggregate_first_run_failure_leaves_nothing(tmp_path, monkeypatch):
    _reports(tmp_path)
    _crash_on_write(monkeypatch, fail_at=1)
    with pytest.raises(Exception, match="simulated failure"):
        aggregate.run(["--config", str(tmp_path / "config.json"), "--input",
                       str(tmp_path / "r.avro"), "--output", str(tmp_path / "out"),
                       "--totals-out", str(tmp_path / "totals.npz")])
    assert _listing(tmp_path) == ["config.json", "r.avro"]


def test_simulate_failure_leaves_nothing(tmp_path, monkeypatch):
    _crash_on_write(monkeypatch, fail_at=2)
    with pytest.raises(Exception, match="simulated failure"):
        simulate.run(["--protocol", "grr", "--k", "8", "--epsilon", "1", "--n", "500",
                      "--distribution", "uniform", "--seed", "1",
                      "--output", str(tmp_path / "sim")])
    assert _listing(tmp_path) == []


def test_evaluate_failure_leaves_previous_report_and_other_files(tmp_path, monkeypatch):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "discussion.md").write_text("hand-written\n")
    (out / "report.md").write_text("previous report\n")

    def fail(cells, trials, out_dir, meta):
        with open(os.path.join(out_dir, "results.csv"), "w") as f:
            f.write("half,a")
        raise Crash("simulated failure in write_outputs")

    monkeypatch.setattr(evaluate, "write_outputs", fail)
    with pytest.raises(Exception, match="simulated failure"):
        evaluate.run(["--protocols", "grr", "--k", "8", "--epsilons", "1", "--trials", "1",
                      "--n", "200", "--output", str(out)])
    assert _listing(out) == ["discussion.md", "report.md"]
    assert (out / "report.md").read_text() == "previous report\n"
    assert _listing(tmp_path) == ["eval"]


def test_encode_failure_leaves_nothing(tmp_path, monkeypatch):
    def fail(fo, fingerprint, protocol_id, pieces, codec="null"):
        fo.write(b"Obj\x01 half a file")
        raise Crash("simulated failure in the Avro writer")

    monkeypatch.setattr(encode, "write_avro_reports", fail)
    with pytest.raises(Crash):
        encode.encode_items(CONFIG, np.arange(10) % 8, str(tmp_path / "r.avro"), seed=1)
    assert _listing(tmp_path) == []


def test_config_and_audit_failures_leave_nothing(tmp_path, monkeypatch):
    def fail_save(self, path):
        with open(path, "w") as f:
            f.write('{"protocol": "gr')
        raise Crash("simulated failure saving the config")

    monkeypatch.setattr(CollectionConfig, "save", fail_save)
    with pytest.raises(Crash):
        config_cmd.save_atomic(CONFIG, str(tmp_path / "config.json"))
    assert _listing(tmp_path) == []

    def fail_replace(src, dst):
        raise Crash("simulated failure before the rename")

    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(Crash):
        audit.run(["--protocol", "grr", "--k", "4", "--epsilon", "1", "--samples", "2000",
                   "--seed", "1", "--output", str(tmp_path / "audit.json")])
    assert _listing(tmp_path) == []


def test_write_bytes_atomic_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    common.write_text_atomic(str(path), "old\n")

    def fail_replace(src, dst):
        raise Crash("simulated failure before the rename")

    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(Crash):
        common.write_text_atomic(str(path), "new, but interrupted\n")
    assert path.read_text() == "old\n" and _listing(tmp_path) == ["f.json"]


def test_streaming_pane_failure_leaves_no_window_directory(tmp_path, monkeypatch):
    p = CONFIG.protocol
    acc = p.add_reports(p.create_accumulator(),
                        p.randomize(np.arange(50) % 8, np.random.default_rng(0)))
    pane = {"window_start": 0.0, "window_end": 60.0, "timing": "ON_TIME", "pane_index": 0,
            "n": acc.n, "counts": acc, "estimate": p.estimate(acc),
            "stats": {"read": 50, "accepted": 50, "rejected": {}}}
    writer = WritePane(str(tmp_path / "live"), CONFIG.to_json(indent=None))
    _crash_on_write(monkeypatch, fail_at=2)
    with pytest.raises(Crash):
        list(writer.process(pane))
    assert _listing(tmp_path / "live" / "windows") == []
    monkeypatch.undo()
    (final,) = writer.process(pane)
    assert _listing(final) == ["estimates.parquet", "summary.json", "totals.npz"]


# ----- client randomness ---------------------------------------------------------------------------
def _spy_os_entropy(monkeypatch) -> list:
    """Record numpy's draws of fresh OS entropy (``secrets.randbits`` behind SeedSequence())."""
    import numpy.random.bit_generator as bg

    calls = []
    real = bg.randbits

    def spy(bits):
        calls.append(bits)
        return real(bits)

    monkeypatch.setattr(bg, "randbits", spy)
    return calls


def _records(path) -> list:
    import fastavro

    with open(path, "rb") as f:
        return list(fastavro.reader(f))


def test_encode_randomness_is_os_entropy_unless_seeded(tmp_path, monkeypatch):
    items = np.arange(400) % 8
    calls = _spy_os_entropy(monkeypatch)
    state = np.random.get_state()[1].copy()
    paths = [str(tmp_path / f"r{i}.avro") for i in range(4)]
    encode.encode_items(CONFIG, items, paths[0])
    encode.encode_items(CONFIG, items, paths[1])
    assert calls == [128, 128]  # one fresh 128-bit OS-entropy seed per unseeded run
    encode.encode_items(CONFIG, items, paths[2], seed=5)
    encode.encode_items(CONFIG, items, paths[3], seed=5)
    assert calls == [128, 128]  # a given seed draws no entropy ...
    data = [_records(p) for p in paths]
    assert data[2] == data[3]  # ... and reproduces the reports
    assert data[0] != data[1]  # unseeded runs differ (identical: probability ~ 0.4^400)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # global RNG untouched


def test_randomizers_take_an_injected_generator():
    """No protocol hides a default RNG: ``randomize`` requires the generator argument."""
    import inspect

    from privfreq.protocols.base import get_protocol_class, protocol_ids

    for pid in protocol_ids():
        param = inspect.signature(get_protocol_class(pid).randomize).parameters["rng"]
        assert param.default is inspect.Parameter.empty, pid
