"""Client state of the longitudinal protocols (protocols/longitudinal_client.py): memo entries are
never redrawn, the ledger is ε∞ × distinct memo keys <= the cap, state round-trips through bytes and
SQLite and refuses another config or a lost memo."""
import sqlite3

import numpy as np
import pytest

from privfreq.protocols.dbitflip import DBitFlipPM
from privfreq.protocols.lgrr import LGRR
from privfreq.protocols.loloha import LOLOHA, BiLOLOHA
from privfreq.protocols.longitudinal_client import (LongitudinalClient, MemoStore,
                                                    SqliteStateStore, StateError)
from privfreq.protocols.longitudinal_unary import LOSUE, LSUE

PROTOS = [LGRR(12, 2.0, 0.8), LOSUE(12, 2.0, 0.8), LSUE(12, 2.0, 0.8), LOLOHA(12, 2.0, 0.8),
          BiLOLOHA(12, 2.0, 0.8), DBitFlipPM(12, 2.0, d=3)]
IDS = [p.protocol_id for p in PROTOS]


@pytest.mark.parametrize("proto", PROTOS, ids=IDS)
def test_ledger_constant_and_distinct_values(proto):
    rng = np.random.default_rng(1)
    store = MemoStore(proto)
    store.add_users(3, rng)
    # user 0: one value 50 times; user 1: m = 5 distinct values; user 2: every value
    users = np.concatenate([np.zeros(50), np.ones(50), np.full(120, 2)]).astype(np.int64)
    items = np.concatenate([np.full(50, 4), np.arange(50) % 5, np.arange(120) % 12])
    store.report(users, items, rng)
    assert store.n_keys[0] == 1 and store.spent()[0] == proto.epsilon_perm
    # distinct memo keys of the 5 values (LOLOHA: distinct hashes; dBitFlipPM: positions)
    keys1 = np.unique(proto.memo_keys(np.arange(5), np.repeat(store.public[1:2], 5, axis=0)))
    assert store.n_keys[1] == len(keys1) <= min(5, proto.memo_key_count)
    assert store.n_keys[2] == len(np.unique(proto.memo_keys(
        np.arange(12), np.repeat(store.public[2:3], 12, axis=0))))
    assert (store.spent() <= proto.budget_cap + 1e-12).all()
    assert list(store.reports) == [50, 50, 120]


@pytest.mark.parametrize("proto", PROTOS, ids=IDS)
def test_memo_entries_never_redrawn(proto):
    rng = np.random.default_rng(2)
    store = MemoStore(proto)
    store.add_users(40, rng)
    items = rng.integers(0, proto.k, 40)
    store.report(np.arange(40), items, rng)
    before = [a.copy() for a in store.entries()]
    for _ in range(5):
        store.report(np.arange(40), items, rng)
    after = store.entries()
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_lgrr_reports_are_post_processing_of_the_memo():
    # with ε1 close to ε∞ the instantaneous round keeps B′ most of the time: the plurality of a
    # user's reports is its memo entry (P(wrong) < 1e-12 for 200 reports at p2 ~ 0.9)
    proto = LGRR(6, 3.0, 2.9)
    rng = np.random.default_rng(3)
    store = MemoStore(proto)
    store.add_users(20, rng)
    users = np.repeat(np.arange(20), 200)
    batch = store.report(users, np.full(len(users), 2), rng)
    mode = [np.bincount(batch.values[users == u, 0], minlength=6).argmax() for u in range(20)]
    user, key, vals = store.entries()
    assert (key == 2).all()
    np.testing.assert_array_equal(mode, vals[:, 0])


def test_dense_and_sorted_layouts_agree():
    proto = LGRR(30, 2.0, 1.0)
    out = []
    for dense in (True, False):
        rng = np.random.default_rng(4)
        store = MemoStore(proto, dense=dense)
        store.add_users(100, rng)
        r = [store.report(rng.integers(0, 100, 500), rng.integers(0, 30, 500), rng).values
             for _ in range(3)]
        out.append((r, store.entries()))
    for a, b in zip(out[0][0], out[1][0]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(out[0][1], out[1][1]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("proto", PROTOS, ids=IDS)
def test_client_bytes_round_trip(proto):
    rng = np.random.default_rng(5)
    client = LongitudinalClient(proto, rng)
    client.report([1, 1, 3])
    data = client.to_bytes()
    again = LongitudinalClient.from_bytes(data, proto, np.random.default_rng(6))
    assert again.spent == client.spent and again.memo_keys_used == client.memo_keys_used
    np.testing.assert_array_equal(again.public, client.public)
    for a, b in zip(again._store.entries(), client._store.entries()):
        np.testing.assert_array_equal(a, b)
    again.report([1])
    assert again.spent == client.spent  # same memo key: no new spend


def test_state_of_another_config_or_corrupt_is_an_error():
    rng = np.random.default_rng(7)
    client = LongitudinalClient(LGRR(12, 2.0, 0.8), rng)
    client.report([1])
    data = client.to_bytes()
    with pytest.raises(StateError, match="another config|not this config"):
        LongitudinalClient.from_bytes(data, LGRR(12, 2.0, 0.7), rng)
    with pytest.raises(StateError, match="truncated"):
        LongitudinalClient.from_bytes(data[:-8], LGRR(12, 2.0, 0.8), rng)
    with pytest.raises(StateError, match="magic"):
        LongitudinalClient.from_bytes(b"garbage", LGRR(12, 2.0, 0.8), rng)


def test_non_longitudinal_protocol_rejected():
    from privfreq.protocols.grr import GRR
    with pytest.raises(ValueError, match="not a longitudinal"):
        MemoStore(GRR(4, 1.0))


@pytest.mark.parametrize("proto", [LOLOHA(12, 2.0, 0.8), LOSUE(12, 2.0, 0.8),
                                   DBitFlipPM(12, 2.0, d=3)], ids=["loloha", "losue", "dbitflip"])
def test_sqlite_store_persists_and_new_users_join(tmp_path, proto):
    path = tmp_path / "users.sqlite"
    rng = np.random.default_rng(8)
    ids = np.array([10, 2**40, 7, 10], dtype=np.int64)
    items = np.array([3, 4, 5, 3])
    with SqliteStateStore(path, proto) as store:
        store.report(ids, items, rng)
        memo = {u: store.memo_of(u) for u in (10, 2**40, 7)}
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with SqliteStateStore(path, proto) as store:
        # next round: old users again with a changed item, and a new user
        store.report(np.array([10, 7, 99]), np.array([3, 6, 1]), rng)
        for u in (10, 7):
            for k, v in memo[u].items():
                np.testing.assert_array_equal(store.memo_of(u)[k], v)
        users, spent = store.spent()
        assert list(users) == [7, 10, 99, 2**40]
        assert (spent <= proto.budget_cap).all() and spent[1] == proto.epsilon_perm


def test_sqlite_matches_in_memory_store(tmp_path):
    proto = LOLOHA(20, 2.0, 0.8)
    rows = [(np.array([5, 1, 5, 9]), np.array([2, 3, 2, 7])), (np.array([1, 9, 4]),
                                                              np.array([3, 8, 0]))]
    with SqliteStateStore(tmp_path / "s.sqlite", proto) as store:
        rng = np.random.default_rng(9)
        sql = [store.report(u, x, rng) for u, x in rows]
    # same draws in memory: users 1, 5, 9 then 4 in sorted order per batch
    rng = np.random.default_rng(9)
    mem = MemoStore(proto, dense=False)
    mem.add_users(3, None, public=proto.draw_public(3, rng))
    b0 = mem.report(np.array([1, 0, 1, 2]), rows[0][1], rng)
    np.testing.assert_array_equal(b0.values, sql[0].values)
    np.testing.assert_array_equal(b0.seed, sql[0].seed)


def test_sqlite_other_config_and_lost_memo_are_errors(tmp_path):
    path = tmp_path / "users.sqlite"
    proto = LGRR(12, 2.0, 0.8)
    rng = np.random.default_rng(10)
    with SqliteStateStore(path, proto) as store:
        store.report(np.arange(5), np.arange(5), rng)
    with pytest.raises(StateError, match="not this config"):
        SqliteStateStore(path, LGRR(12, 2.0, 0.7))
    con = sqlite3.connect(path)
    con.execute("UPDATE users SET keys = x'', memo = x'' WHERE user_id = 3")
    con.commit()
    con.close()
    with SqliteStateStore(path, proto) as store:
        with pytest.raises(StateError, match="user 3 has reported.*memo is lost"):
            store.report(np.array([2, 3]), np.array([2, 3]), rng)
        # nothing of the failed batch was written
        assert store.memo_of(2) and store.spent()[1].sum() == 4 * proto.epsilon_perm


def test_sqlite_batch_is_all_or_nothing(tmp_path, monkeypatch):
    """A failure between drawing and committing leaves the committed memo entries as they were;
    a re-run of the batch reuses them (never a redraw)."""
    path = tmp_path / "users.sqlite"
    proto = LGRR(12, 2.0, 0.8)
    rng = np.random.default_rng(11)
    with SqliteStateStore(path, proto) as store:
        store.report(np.arange(4), np.arange(4), rng)
        before = {u: store.memo_of(u) for u in range(4)}
    import privfreq.protocols.longitudinal_client as mod
    real_report = mod.MemoStore.report

    def crash(self, *a, **kw):
        real_report(self, *a, **kw)
        raise KeyboardInterrupt("killed mid-batch")

    monkeypatch.setattr(mod.MemoStore, "report", crash)
    with SqliteStateStore(path, proto) as store, pytest.raises(KeyboardInterrupt):
        store.report(np.arange(8), np.array([5, 6, 7, 8, 1, 1, 1, 1]), rng)
    monkeypatch.setattr(mod.MemoStore, "report", real_report)
    with SqliteStateStore(path, proto) as store:
        assert {u: store.memo_of(u) for u in range(4)} == before
        assert store.memo_of(5) == {}
        store.report(np.arange(4), np.arange(4), rng)
        assert {u: store.memo_of(u) for u in range(4)} == before


def test_sqlite_format_1_is_migrated_in_place(tmp_path):
    """A format-1 file (public blob, reports counter) opens: migrated, seed and memo kept."""
    from privfreq.protocols.config import CollectionConfig
    path = tmp_path / "old.sqlite"
    proto = LOLOHA(12, 2.0, 0.8)  # public: one hash-seed word, with a zero byte in it
    cfg = CollectionConfig.of(proto)
    memo = np.array([1], "<i8").tobytes()
    seed = np.array([0x0102000304], "<i8").tobytes()
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    con.execute("CREATE TABLE users (user_id INTEGER PRIMARY KEY, public BLOB NOT NULL, "
                "keys BLOB NOT NULL, memo BLOB NOT NULL, reports INTEGER NOT NULL)")
    con.executemany("INSERT INTO meta VALUES (?, ?)", [
        ("format", "1"), ("fingerprint", cfg.fingerprint), ("config", cfg.to_json(indent=None))])
    con.execute("INSERT INTO users VALUES (5, ?, ?, ?, 3)",
                (seed, np.array([2], "<i4").tobytes(), memo))  # key 2 < g = 3
    con.commit()
    con.close()
    rng = np.random.default_rng(1)
    with SqliteStateStore(path, proto) as store:
        assert {k: v.tolist() for k, v in store.memo_of(5).items()} == {2: [1]}
        b = store.report(np.array([5, 6]), np.array([3, 1]), rng)
        assert int(b.seed[0]) == 0x0102000304  # user 5's hash seed survived the migration
        assert len(store.memo_of(6)) == 1 and len(b.values) == 2
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()[0] == "2"
    assert [r[1] for r in con.execute("PRAGMA table_info(users)")] == ["user_id", "keys", "memo"]
