"""Property-based fuzzing (hypothesis) of hostile and broken input: report parsing never crashes and
accounts for every record (accepted + rejected = read), accepted reports are safe to count, and
CollectionConfig.from_json only ever raises ValueError."""
import io
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _tf_helpers import MSS_BITMAP, MSS_INDICES, avro_bytes, records_for
from privfreq.protocols.config import CollectionConfig
from privfreq.schemas.avro import read_avro_range
from privfreq.schemas.columns import ReportColumns
from privfreq.transforms.parse import parse_columns

CONFIGS = [MSS_INDICES, MSS_BITMAP,
           CollectionConfig("grr", {"k": 300, "epsilon": 1.0}),
           CollectionConfig("ss", {"k": 20, "epsilon": 1.0}),
           CollectionConfig("olh", {"k": 20, "epsilon": 1.0}),
           CollectionConfig("oue", {"k": 20, "epsilon": 1.0}),
           CollectionConfig("hr", {"k": 20, "epsilon": 1.0}),
           CollectionConfig("rappor", {"k": 20, "epsilon": 1.0}),
           CollectionConfig("pgr", {"k": 20, "epsilon": 1.0})]
VALID = {c.fingerprint: records_for(c, np.arange(40) % c.protocol.k, seed=1) for c in CONFIGS}
# derandomize: CI runs the same examples every time (a fixed seed, as for the statistical tests);
# explore more with `pytest --hypothesis-seed=N` (seeds 1-11 × 60 examples ran clean).
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

INT64 = st.integers(-2**63, 2**63 - 1)
INT32 = st.integers(-2**31, 2**31 - 1)


def _mutations(config, avro_typed: bool):
    """A valid record of ``config`` with any subset of its fields replaced by hostile values."""
    p = config.protocol
    block = INT32 if avro_typed else st.one_of(INT64, st.integers(), st.none(), st.text(max_size=3),
                                               st.booleans(), st.floats())
    seed = INT64 if avro_typed else st.one_of(INT64, st.integers(), st.none(), st.booleans(),
                                              st.binary(max_size=3))
    text = st.text(max_size=20) if avro_typed else st.one_of(st.text(max_size=20), st.none(),
                                                             st.integers(), st.binary(max_size=4))
    payload_len = max(p.payload_width(j) for j in range(p.n_blocks))
    payload = st.binary(max_size=payload_len + 2)
    if not avro_typed:
        payload = st.one_of(payload, st.text(max_size=3), st.none(), st.integers())
    small_block = st.integers(-1, p.n_blocks)
    bound = p.seed_bound()  # 2**63 for OLH: not an Avro long, so clipped for Avro-typed records
    small_seed = st.one_of(st.integers(-1, 3), st.just(min(bound, 2**63 - 1) if avro_typed else bound),
                           st.just(bound - 1))
    fields = {
        "config_fingerprint": st.one_of(st.just(config.fingerprint), text),
        "protocol": st.one_of(st.just(p.protocol_id), st.sampled_from(["mss", "grr", "ss"]), text),
        "block": st.one_of(small_block, block),
        "seed": st.one_of(small_seed, seed),
        "payload": payload,
    }
    base = st.sampled_from(VALID[config.fingerprint])

    @st.composite
    def record(draw):
        rec = dict(draw(base))
        for name in draw(st.sets(st.sampled_from(sorted(fields)))):
            rec[name] = draw(fields[name])
        if not avro_typed and draw(st.booleans()):
            victim = draw(st.sampled_from(sorted(fields)))
            del rec[victim]
        return rec

    return record()


def _check(batches_and_config):
    total_read = total_acc = total_rej = 0
    for cols, config in batches_and_config:
        batches, dead, stats = parse_columns(cols, config)
        assert stats["accepted"] + sum(stats["rejected"].values()) == stats["read"] == cols.n_read
        assert stats["accepted"] == sum(len(b) for b in batches)
        # one dead letter per rejected record, plus one per damaged region (which counts the
        # reports it declared and lost: possibly 0 when every record was salvaged, or many)
        region_reports = cols.unreadable.n_reports if cols.unreadable is not None else 0
        assert len(dead) == (sum(stats["rejected"].values()) - region_reports
                             + sum(stats["regions"].values()))
        assert all(set(d) == {"raw", "source", "reason", "reason_code", "message"} for d in dead)
        # Whatever passed validation is safe to count: no crash, no out-of-range index.
        p = config.protocol
        acc = p.create_accumulator()
        for b in batches:
            p.add_reports(acc, b)
        assert acc.n == stats["accepted"]
        total_read += stats["read"]
        total_acc += stats["accepted"]
        total_rej += sum(stats["rejected"].values())
    return total_read, total_acc, total_rej


@FUZZ
@given(data=st.data(), config=st.sampled_from(CONFIGS))
def test_in_memory_records(data, config):
    """Arbitrary Python records (wrong types, missing fields, non-dicts) as a reader might yield."""
    recs = data.draw(st.lists(st.one_of(_mutations(config, avro_typed=False),
                                        st.sampled_from(VALID[config.fingerprint]),
                                        st.none(), st.integers(), st.text(max_size=5)),
                              max_size=30))
    cols = ReportColumns.from_records(recs, "fuzz")
    read, acc, rej = _check([(cols, config)])
    assert read == len(recs) and acc + rej == len(recs)


@FUZZ
@given(data=st.data(), config=st.sampled_from(CONFIGS))
def test_avro_files_of_hostile_records_and_corrupted_bytes(data, config):
    recs = data.draw(st.lists(_mutations(config, avro_typed=True), min_size=1, max_size=40))
    raw = avro_bytes(recs, sync_interval=data.draw(st.sampled_from([16, 64, 1000])))
    read, acc, rej = _check((c, config) for c in read_avro_range(io.BytesIO(raw), "f", 16))
    assert read == len(recs) and acc + rej == len(recs)
    # Corrupt the file: truncate and/or overwrite some bytes. The reader may lose records, but
    # every batch still accounts for what it read, and nothing raises.
    cut = data.draw(st.integers(0, len(raw)))
    bad = bytearray(raw[:cut])
    for _ in range(data.draw(st.integers(0, 4))):
        if bad:
            bad[data.draw(st.integers(0, len(bad) - 1))] = data.draw(st.integers(0, 255))
    _check((c, config) for c in read_avro_range(io.BytesIO(bytes(bad)), "f", 16))


@FUZZ
@given(raw=st.binary(max_size=300), config=st.sampled_from(CONFIGS))
def test_random_bytes_as_a_file(raw, config):
    read, acc, rej = _check((c, config) for c in read_avro_range(io.BytesIO(raw), "f", 16))
    assert acc + rej == read


# ---- CollectionConfig.from_json -----------------------------------------------------------------

JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                              st.text(max_size=5)),
                    lambda inner: st.one_of(st.lists(inner, max_size=4),
                                            st.dictionaries(st.text(max_size=5), inner,
                                                            max_size=4)),
                    max_leaves=10)
PARAM_VALUE = st.one_of(JSON, st.integers(-3, 70), st.floats(-1, 70),
                        st.lists(st.integers(-2, 40), max_size=4), st.sampled_from([1e308, 1e-320]))
PARAMS = st.dictionaries(st.sampled_from(["k", "epsilon", "moduli", "ridge", "cohorts", "g", "h",
                                          "hash_count", "bloom_bits", "nope"]),
                         PARAM_VALUE, max_size=5)
CONFIG_DOC = st.fixed_dictionaries(
    {"protocol": st.one_of(st.sampled_from(["mss", "ss", "grr", "olh", "oue", "sue", "hr", "rappor",
                                            "pgr", "nope"]), JSON),
     "params": st.one_of(PARAMS, JSON)},
    optional={"schema_version": st.one_of(st.just(1), JSON),
              "fingerprint": st.one_of(st.text(max_size=16), JSON), "extra": JSON})


def _from_json_only_value_error(text):
    try:
        cfg = CollectionConfig.from_json(text)
    except ValueError:
        return None
    # A loaded config is usable: it round-trips to the same fingerprint.
    assert CollectionConfig.from_json(cfg.to_json()).fingerprint == cfg.fingerprint
    return cfg


@settings(max_examples=300, deadline=None, derandomize=True)
@given(doc=CONFIG_DOC)
def test_config_from_json_structured(doc):
    _from_json_only_value_error(json.dumps(doc))


@pytest.mark.parametrize("doc", [{"protocol": [], "params": {}},
                                 {"protocol": "mss", "params": {"k": 30, "epsilon": 1.0}}])
def test_config_bugs_found_by_fuzzing_raise_value_error(doc):
    # Both used to raise TypeError (unhashable id; missing required parameter).
    with pytest.raises(ValueError):
        CollectionConfig.from_json(json.dumps(doc))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(text=st.one_of(st.text(max_size=50), JSON.map(json.dumps)))
def test_config_from_json_arbitrary_text(text):
    _from_json_only_value_error(text)
