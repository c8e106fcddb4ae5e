"""``privfreq encode --state``: SQLite client state across rounds, a real SIGKILL mid-run and a
re-run (memo entries unchanged, reports complete and decodable), and the clear errors (another
config's state, a lost memo, missing columns). No Beam."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from privfreq.pipelines import cli, encode
from privfreq.protocols.base import ReportBatch
from privfreq.protocols.config import CollectionConfig
from privfreq.protocols.longitudinal_client import SqliteStateStore, StateError
from privfreq.schemas.avro import read_avro_range

LOLOHA = CollectionConfig("loloha", {"k": 64, "epsilon_perm": 2.0, "epsilon": 0.8})


def _write(tmp_path, name, users, items):
    path = tmp_path / name
    pq.write_table(pa.table({"user_id": np.asarray(users, np.int64),
                             "item": np.asarray(items, np.int64)}), path)
    return str(path)


def _read(path):
    with open(path, "rb") as f:
        batches = list(read_avro_range(f, str(path), 1 << 20))
    return batches


def _users_table(state):
    conn = sqlite3.connect(state)
    try:
        return {u: (bytes(k), bytes(m)) for u, k, m in
                conn.execute("SELECT user_id, keys, memo FROM users").fetchall()}
    finally:
        conn.close()


def _encode(tmp_path, inp, out, state, round_, seed, config=LOLOHA, extra=()):
    (tmp_path / "c.json").write_text(config.to_json())
    return cli.main(["encode", "--config", str(tmp_path / "c.json"), "--input", inp,
                     "--round", str(round_), "--state", state, "--output", str(out),
                     "--seed", str(seed), *extra])


def test_rounds_reuse_memo_and_new_users_join(tmp_path):
    state = str(tmp_path / "u.sqlite")
    rng = np.random.default_rng(3)
    items0 = rng.integers(0, 64, 500)
    assert _encode(tmp_path, _write(tmp_path, "d0.parquet", np.arange(500), items0),
                   tmp_path / "r0.avro", state, 0, 1) == 0
    before = _users_table(state)
    # round 1: the same 500 users report the same items, 100 new users join
    users1 = np.arange(600)
    items1 = np.concatenate([items0, rng.integers(0, 64, 100)])
    assert _encode(tmp_path, _write(tmp_path, "d1.parquet", users1, items1),
                   tmp_path / "r1.avro", state, 1, 2) == 0
    after = _users_table(state)
    assert len(after) == 600
    assert all(after[u] == before[u] for u in before)  # same item, same memo key: nothing drawn
    (b,) = _read(tmp_path / "r1.avro")
    assert len(b) == 600 and b.round is not None and (b.round == 1).all()
    with SqliteStateStore(state, LOLOHA) as store:
        ids, spent = store.spent()
    assert ids.tolist() == list(range(600)) and np.allclose(spent, 2.0)  # one key each: ε∞


def test_csv_input_and_changed_items_spend_more(tmp_path):
    state = str(tmp_path / "u.sqlite")
    (tmp_path / "d0.csv").write_text("user_id,item\n1,5\n2,6\n3,7\n")
    (tmp_path / "d1.csv").write_text("item,user_id\n5,1\n60,2\n7,3\n")
    for r in (0, 1):
        assert _encode(tmp_path, str(tmp_path / f"d{r}.csv"), tmp_path / f"r{r}.avro",
                       state, r, r) == 0
    with SqliteStateStore(state, LOLOHA) as store:
        _, spent = store.spent()
        g = store.protocol.g
        n_keys = [len(store.memo_of(u)) for u in (1, 2, 3)]
    assert n_keys[0] == 1 and n_keys[2] == 1 and n_keys[1] in (1, 2)  # a hash may collide
    assert np.allclose(spent, 2.0 * np.array(n_keys)) and spent.max() <= 2.0 * g


def test_kill_mid_run_and_rerun_keep_permanent_responses(tmp_path):
    """A real subprocess killed with SIGKILL after some batches committed: no report file, the
    committed memo entries survive, and the re-run reuses every one of them."""
    n, batch = 300_000, 5_000
    rng = np.random.default_rng(11)
    state = str(tmp_path / "u.sqlite")
    # round 0 for the first half of the users, run cleanly
    items0 = rng.integers(0, 64, n // 2)
    assert _encode(tmp_path, _write(tmp_path, "d0.parquet", np.arange(n // 2), items0),
                   tmp_path / "r0.avro", state, 0, 1) == 0
    round0 = _users_table(state)
    # round 1: every user, a tenth of the old ones with a new item; killed mid-run
    items1 = rng.integers(0, 64, n)
    keep = rng.random(n // 2) < 0.9
    items1[:n // 2][keep] = items0[keep]
    inp = _write(tmp_path, "d1.parquet", rng.permutation(n), items1)
    out = tmp_path / "r1.avro"
    proc = subprocess.Popen(
        [sys.executable, "-m", "privfreq.pipelines.cli", "encode", "--config",
         str(tmp_path / "c.json"), "--input", inp, "--round", "1", "--state", state,
         "--output", str(out), "--batch-rows", str(batch), "--seed", "5"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            conn = sqlite3.connect(state, timeout=5)
            try:
                n_users = conn.execute("SELECT count(*) FROM users").fetchone()[0]
            finally:
                conn.close()
            if n_users >= n // 2 + 2 * batch // 2:  # at least ~2 batches of round 1 committed
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # the report file is renamed into place only after the last commit
    crashed = _users_table(state)
    assert n // 2 < len(crashed) < n  # killed mid-run, with committed batches
    assert all(_entries(crashed[u]) >= _entries(round0[u])
               for u in round0)  # round-0 entries kept
    # the re-run (other randomness) completes and redraws nothing that was committed
    assert _encode(tmp_path, inp, out, state, 1, 6, extra=["--batch-rows", str(batch)]) == 0
    final = _users_table(state)
    assert len(final) == n
    # every committed entry kept as drawn; users first seen in the killed run report the same
    # item again, so they have exactly the entries the killed run drew
    assert all(_entries(final[u]) >= _entries(crashed[u]) for u in crashed)
    assert all(final[u] == crashed[u] for u in crashed if u not in round0)
    # the final reports decode: all n, this config, round 1, and an estimate near the truth
    proto = LOLOHA.protocol
    acc = proto.create_accumulator()
    total = 0
    for b in _read(out):
        assert set(b.fp_values) == {LOLOHA.fingerprint} and (b.round == 1).all()
        values, reason = proto.decode_payloads(0, b.payload_data.reshape(len(b), -1))
        assert (reason == 0).all()
        proto.add_reports(acc, ReportBatch(b.block, b.seed, values))
        total += len(b)
    assert total == n
    est = proto.estimate(acc)
    truth = np.bincount(items1, minlength=64) / n
    # 5 stderr per item (Gaussian tail 6e-7, 64 items: false failure < 4e-5)
    assert np.all(np.abs(est.frequencies - truth) <= 5 * est.stderr)


def _entries(row):
    keys, memo = row
    k = np.frombuffer(keys, "<i4")
    # memo blob: the user's public words (LOLOHA: its hash seed), then one entry per key
    v = np.frombuffer(memo, "<i8")[LOLOHA.protocol.public_width:].reshape(len(k), -1)
    return {(int(a), tuple(b.tolist())) for a, b in zip(k, v)}


def test_state_of_another_config_is_refused(tmp_path):
    state = str(tmp_path / "u.sqlite")
    inp = _write(tmp_path, "d.parquet", [1, 2], [3, 4])
    assert _encode(tmp_path, inp, tmp_path / "r.avro", state, 0, 1) == 0
    other = CollectionConfig("loloha", {"k": 64, "epsilon_perm": 3.0, "epsilon": 0.8})
    with pytest.raises(StateError, match="another|not this config"):
        _encode(tmp_path, inp, tmp_path / "r2.avro", state, 1, 1, config=other)
    assert not (tmp_path / "r2.avro").exists()


def test_lost_memo_is_an_error_not_a_redraw(tmp_path):
    state = str(tmp_path / "u.sqlite")
    inp = _write(tmp_path, "d.parquet", [1, 2], [3, 4])
    assert _encode(tmp_path, inp, tmp_path / "r.avro", state, 0, 1) == 0
    conn = sqlite3.connect(state)
    conn.execute("UPDATE users SET keys = x'', memo = x'' WHERE user_id = 2")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match="user 2 .*memo is lost"):
        _encode(tmp_path, inp, tmp_path / "r2.avro", state, 1, 1)
    assert not (tmp_path / "r2.avro").exists()
    assert _users_table(state)[2] == (b"", b"")  # nothing redrawn


def test_state_needs_user_column_and_a_longitudinal_protocol(tmp_path):
    (tmp_path / "d.csv").write_text("item\n1\n2\n")
    with pytest.raises(ValueError, match="user_id"):
        _encode(tmp_path, str(tmp_path / "d.csv"), tmp_path / "r.avro",
                str(tmp_path / "u.sqlite"), 0, 1)
    grr = CollectionConfig("grr", {"k": 8, "epsilon": 1.0})
    inp = _write(tmp_path, "d.parquet", [1], [2])
    with pytest.raises(ValueError, match="keeps no state"):
        _encode(tmp_path, inp, tmp_path / "r.avro", str(tmp_path / "u.sqlite"), 0, 1,
                config=grr)
    (tmp_path / "bad.csv").write_text("user_id,item\n1,2\nx,3\n")
    with pytest.raises(ValueError, match="row 2"):
        encode.read_user_items(str(tmp_path / "bad.csv"))


def test_budget_command(tmp_path, capsys):
    state = str(tmp_path / "u.sqlite")
    config = CollectionConfig("biloloha", {"k": 64, "epsilon_perm": 1.5, "epsilon": 0.5})
    rng = np.random.default_rng(2)
    users = np.arange(200)
    for r in range(6):  # items change every round: most users use both hash values (g = 2)
        assert _encode(tmp_path, _write(tmp_path, f"d{r}.parquet", users,
                                        rng.integers(0, 64, 200)),
                       tmp_path / f"r{r}.avro", state, r, r, config=config) == 0
    assert cli.main(["budget", "--state", state, "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    with SqliteStateStore(state, config) as store:
        _, spent = store.spent()
        n_keys = np.array([len(store.memo_of(u)) for u in users])
    assert np.array_equal(spent, 1.5 * n_keys)  # spent = ε∞ × distinct memo keys
    assert s["n_users"] == 200 and s["cap"] == 3.0 and s["max"] <= 3.0
    assert s["at_cap"] == int((n_keys == 2).sum()) > 100
    assert s["mean"] == pytest.approx(spent.mean()) and s["p50"] == 3.0
    assert cli.main(["budget", "--state", state]) == 0
    assert "at cap" in capsys.readouterr().out
    with pytest.raises(ValueError, match="does not exist"):
        cli.main(["budget", "--state", str(tmp_path / "none.sqlite")])
    (tmp_path / "junk.sqlite").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ValueError, match="not a privfreq"):
        cli.main(["budget", "--state", str(tmp_path / "junk.sqlite")])
