"""Hostile hcms / cms / pem reports: every malformed block, seed or payload becomes a dead letter with
the right ``Reason``, through the protocol's ``decode_payloads`` and through the aggregate
pipeline's parsing path (an Avro file read by ``schemas.avro.read_avro_range``, then
``transforms.parse.parse_columns``, which ``ParseReports`` runs); ``accepted + rejected = read``,
and the accepted reports count exactly like the honest ones alone."""
import io

import fastavro
import numpy as np
import pytest

from privfreq import schemas
from privfreq.protocols.base import Reason
from privfreq.protocols.config import CollectionConfig
from privfreq.protocols.pem import PEM
from privfreq.schemas.avro import read_avro_range
from privfreq.transforms.parse import merge_stats, parse_columns

HCMS = CollectionConfig("hcms", {"k": 64, "epsilon": 2.0, "hashes": 16, "buckets": 16})  # y < 512
CMS = CollectionConfig("cms", {"k": 64, "epsilon": 2.0, "hashes": 4, "buckets": 4})  # 4 pad bits
CMS_WIDE = CollectionConfig("cms", {"k": 64, "epsilon": 2.0, "hashes": 8, "buckets": 64})
# levels: OLH on 2^4 (y < g = 8, 1 byte), HCMS on 2^8 and 2^12 (y < 512, 2 bytes); seeds < 2^63
PEM_AUTO = CollectionConfig.of(PEM(2**12, 2.0, step=4, olh_limit=16, hashes=16, buckets=16))
# MSS on 2^4 with bitmaps (ω = 3, 4, 5 of 7, 11, 13: padding bits and wrong weights expressible),
# HCMS on 2^8; no level uses seeds (seed bound 1)
PEM_MSS_BITMAP = CollectionConfig.of(PEM(2**8, 0.5, step=4, oracle="mss", mss_limit=16,
                                         mss_moduli=[[7, 11, 13]], hashes=16, buckets=16))
# MSS on 2^4 (ω = 1) and 2^8 (planner's moduli, ω = 4-5) as sorted indices: out-of-range residues
# and repeats expressible
PEM_MSS_INDICES = CollectionConfig.of(PEM(2**8, 4.0, step=4, oracle="mss", mss_limit=256))


def _records(config, items, seed=0):
    p = config.protocol
    batch = p.randomize(np.asarray(items, dtype=np.int64), np.random.default_rng(seed))
    return [{"config_fingerprint": config.fingerprint, "protocol": p.protocol_id,
             "block": int(batch.block[i]), "seed": int(batch.seed[i]),
             "payload": p.encode_payloads(int(batch.block[i]), batch.values[i:i + 1]).tobytes()}
            for i in range(len(batch))]


def _avro(records) -> bytes:
    buf = io.BytesIO()
    fastavro.writer(buf, schemas.report_schema(), records, sync_interval=200)
    return buf.getvalue()


def _parse_file(config, raw: bytes):
    """The aggregate's reading and parsing of one file, as library calls."""
    out = [parse_columns(cols, config)
           for cols in read_avro_range(io.BytesIO(raw), "hostile.avro", config.protocol.batch_rows)]
    return ([b for o in out for b in o[0]], [d for o in out for d in o[1]],
            merge_stats(o[2] for o in out))


def _count(config, batches):
    p = config.protocol
    acc = p.create_accumulator()
    for b in batches:
        p.add_reports(acc, b)
    return acc


def _base(config, block, seed=0):
    return {"config_fingerprint": config.fingerprint, "protocol": config.protocol.protocol_id,
            "block": block, "seed": seed}


def _bits(m, members, extra=0):
    """Bitmap payload of ``ceil(m/8)`` bytes, LSB first, with ``members`` set (plus raw
    ``extra`` bits, e.g. padding)."""
    v = sum(1 << int(x) for x in members) | extra
    return v.to_bytes((m + 7) // 8, "little")


def _le(value, width):
    return int(value).to_bytes(width, "little")


def _hostile():
    """(config, [(record, reason)])."""
    cases = []
    b = _base(HCMS, 0)
    cases.append((HCMS, [
        ({**b, "payload": _le(512, 2)}, "VALUE_OUT_OF_RANGE"),        # y >= 2Km = 512
        ({**b, "payload": _le(65535, 2)}, "VALUE_OUT_OF_RANGE"),
        ({**b, "payload": _le(5, 1)}, "BAD_LENGTH"),
        ({**b, "payload": _le(5, 4)}, "BAD_LENGTH"),
        ({**b, "payload": b""}, "BAD_LENGTH"),
        ({**_base(HCMS, 1), "payload": _le(5, 2)}, "BLOCK_OUT_OF_RANGE"),    # one block only
        ({**_base(HCMS, -1), "payload": _le(5, 2)}, "BLOCK_OUT_OF_RANGE"),
        ({**_base(HCMS, 0, seed=7), "payload": _le(5, 2)}, "BAD_SEED"),      # no public seed
        ({**b, "protocol": "cms", "payload": _le(5, 2)}, "PROTOCOL_MISMATCH"),
        ({**b, "config_fingerprint": CMS.fingerprint, "payload": _le(5, 2)},
         "FINGERPRINT_MISMATCH")]))
    b = _base(CMS, 3)
    cases.append((CMS, [
        ({**b, "payload": bytes([0b00010101])}, "BAD_PADDING"),       # bit 4 is past m = 4
        ({**b, "payload": bytes([0xff])}, "BAD_PADDING"),
        ({**b, "payload": bytes([1, 0])}, "BAD_LENGTH"),
        ({**_base(CMS, 4), "payload": bytes([1])}, "BLOCK_OUT_OF_RANGE"),  # row j >= K = 4
        ({**_base(CMS, 2**31 - 1), "payload": bytes([1])}, "BLOCK_OUT_OF_RANGE"),
        ({**_base(CMS, 0, seed=-3), "payload": bytes([1])}, "BAD_SEED")]))
    b = _base(CMS_WIDE, 7)
    cases.append((CMS_WIDE, [
        ({**b, "payload": bytes(7)}, "BAD_LENGTH"),                    # m = 64: 8 bytes
        ({**b, "payload": bytes(9)}, "BAD_LENGTH"),
        ({**_base(CMS_WIDE, 8), "payload": bytes(8)}, "BLOCK_OUT_OF_RANGE")]))
    pa = PEM_AUTO.protocol
    cases.append((PEM_AUTO, [
        ({**_base(PEM_AUTO, 0, seed=5), "payload": _le(8, 1)}, "VALUE_OUT_OF_RANGE"),  # OLH y >= g
        ({**_base(PEM_AUTO, 0, seed=-1), "payload": _le(3, 1)}, "BAD_SEED"),
        ({**_base(PEM_AUTO, 0, seed=5), "payload": _le(3, 2)}, "BAD_LENGTH"),   # HCMS width
        ({**_base(PEM_AUTO, 1), "payload": _le(3, 1)}, "BAD_LENGTH"),           # OLH width
        ({**_base(PEM_AUTO, 1), "payload": _le(512, 2)}, "VALUE_OUT_OF_RANGE"),
        ({**_base(PEM_AUTO, 2), "payload": _le(40000, 2)}, "VALUE_OUT_OF_RANGE"),
        ({**_base(PEM_AUTO, pa.n_blocks), "payload": _le(3, 2)}, "BLOCK_OUT_OF_RANGE"),
        ({**_base(PEM_AUTO, -2), "payload": _le(3, 1)}, "BLOCK_OUT_OF_RANGE")]))
    pb = PEM_MSS_BITMAP.protocol
    cases.append((PEM_MSS_BITMAP, [
        ({**_base(PEM_MSS_BITMAP, 0), "payload": _bits(7, [0, 1, 2], extra=1 << 7)},
         "BAD_PADDING"),                                               # m_0 = 7: bit 7 is padding
        ({**_base(PEM_MSS_BITMAP, 0), "payload": _bits(7, [0, 1])}, "BAD_LENGTH"),   # ω_0 = 3
        ({**_base(PEM_MSS_BITMAP, 1), "payload": _bits(11, range(5))}, "BAD_LENGTH"),  # ω_1 = 4
        ({**_base(PEM_MSS_BITMAP, 2), "payload": _bits(13, range(5), extra=1 << 13)},
         "BAD_PADDING"),
        ({**_base(PEM_MSS_BITMAP, 2), "payload": _bits(13, range(5)) + b"\0"}, "BAD_LENGTH"),
        ({**_base(PEM_MSS_BITMAP, 3), "payload": _le(512, 2)}, "VALUE_OUT_OF_RANGE"),  # HCMS
        ({**_base(PEM_MSS_BITMAP, 0, seed=1), "payload": _bits(7, [0, 1, 2])}, "BAD_SEED"),
        ({**_base(PEM_MSS_BITMAP, pb.n_blocks), "payload": _le(3, 2)}, "BLOCK_OUT_OF_RANGE")]))
    pi = PEM_MSS_INDICES.protocol
    m10 = pi.oracles[1].blocks[0].m                       # first modulus of the 2^8 level
    cases.append((PEM_MSS_INDICES, [
        ({**_base(PEM_MSS_INDICES, 0), "payload": bytes([7])}, "VALUE_OUT_OF_RANGE"),  # m_0 = 7
        ({**_base(PEM_MSS_INDICES, 2), "payload": bytes([255])}, "VALUE_OUT_OF_RANGE"),
        ({**_base(PEM_MSS_INDICES, 3), "payload": bytes([1, 9, 9, 20])}, "DUPLICATE_VALUE"),
        ({**_base(PEM_MSS_INDICES, 3), "payload": bytes([1, 2, 3, m10])}, "VALUE_OUT_OF_RANGE"),
        ({**_base(PEM_MSS_INDICES, 3), "payload": bytes([1, 2, 3])}, "BAD_LENGTH"),
        ({**_base(PEM_MSS_INDICES, 0), "payload": bytes([1, 2, 3, 4])}, "BAD_LENGTH"),
        ({**_base(PEM_MSS_INDICES, pi.n_blocks), "payload": bytes([1])}, "BLOCK_OUT_OF_RANGE")]))
    return cases


CASES = _hostile()


@pytest.mark.parametrize("config, bad", CASES, ids=[f"{c.protocol_id}-{i}"
                                                    for i, (c, _) in enumerate(CASES)])
def test_hostile_reports_become_dead_letters_in_the_file_path(config, bad):
    good = _records(config, np.arange(300) % 64, seed=1)
    # hostile records spread among the honest ones (every block sees some)
    records = list(good)
    for i, (rec, _) in enumerate(bad):
        records.insert(37 * i % len(records), rec)
    batches, dead, stats = _parse_file(config, _avro(records))
    assert stats["read"] == len(records)
    assert stats["accepted"] == sum(len(b) for b in batches) == len(good)
    assert stats["accepted"] + sum(stats["rejected"].values()) == stats["read"]
    order = {id(r): i for i, r in enumerate(records)}
    expected = sorted(((order[id(rec)], why) for rec, why in bad))
    assert [d["reason"] for d in dead] == [why for _, why in expected]
    for d, (i, why) in zip(dead, expected):
        assert d["reason_code"] == Reason[why].value and d["message"]
        assert d["source"].startswith("hostile.avro@")     # file@avro-block#record
        assert fastavro.schemaless_reader(io.BytesIO(d["raw"]), schemas.report_schema()) == \
            records[i]
    # the accepted reports are exactly the honest ones: same counts as parsing them alone
    honest, _, _ = _parse_file(config, _avro(good))
    a, b = _count(config, batches), _count(config, honest)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.n_block, b.n_block)
    assert a.n == len(good)


@pytest.mark.parametrize("config", [HCMS, CMS, PEM_AUTO, PEM_MSS_BITMAP, PEM_MSS_INDICES],
                         ids=lambda c: c.protocol_id)
def test_decode_payloads_flags_every_hostile_payload(config):
    """Straight through ``decode_payloads``, per block: the payload-level cases of ``CASES``
    (right length for their block) get their reason; the honest rows of the block stay OK."""
    p = config.protocol
    bad = [(rec, why) for c, cases in CASES if c is config for rec, why in cases
           if why in ("VALUE_OUT_OF_RANGE", "DUPLICATE_VALUE", "BAD_PADDING")
           or (why == "BAD_LENGTH" and p.protocol_id == "pem" and 0 <= rec["block"] < p.n_blocks
               and len(rec["payload"]) == p.payload_width(rec["block"]))]
    bad = [(rec, why) for rec, why in bad if rec["seed"] >= 0 and rec["seed"] < p.seed_bound()]
    assert bad
    good = _records(config, np.arange(200) % 64, seed=2)
    for block in sorted({rec["block"] for rec, _ in bad}):
        rows = [r for r in good if r["block"] == block] + [r for r, _ in bad if r["block"] == block]
        whys = [0] * sum(r["block"] == block for r in good) + \
            [Reason[w].value for r, w in bad if r["block"] == block]
        raw = np.frombuffer(b"".join(r["payload"] for r in rows), np.uint8).reshape(
            len(rows), p.payload_width(block))
        values, reason = p.decode_payloads(block, raw)
        assert reason.tolist() == whys
        assert values.shape[0] == len(rows)


def test_truncated_and_garbage_files_keep_the_tally():
    """A cut PEM file and random bytes: never a crash, every declared report counted once."""
    good = _records(PEM_MSS_INDICES, np.arange(1000) % 256, seed=3)
    raw = _avro(good)
    for cut in (len(raw) // 3, 2 * len(raw) // 3):
        batches, dead, stats = _parse_file(PEM_MSS_INDICES, raw[:cut])
        assert stats["accepted"] == sum(len(b) for b in batches) < len(good)
        assert stats["accepted"] + sum(stats["rejected"].values()) == stats["read"]
        assert dead and all(d["reason"] in ("TRUNCATED_RECORDS", "UNREADABLE_FILE",
                                            "CORRUPT_RECORDS") for d in dead)
    junk = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    batches, dead, stats = _parse_file(PEM_MSS_INDICES, junk)
    assert batches == [] and stats["accepted"] == 0 and dead
    assert stats["accepted"] + sum(stats["rejected"].values()) == stats["read"]


def test_seeds_on_seedless_pem_levels_are_dead_letters():
    """Seed bounds are per block (``block_max_seeds``): 2^63 on PEM's OLH level, 1 on its HCMS
    levels, so a seed on an HCMS level's report is BAD_SEED, while the same reports with seed 0
    are all accepted."""
    p = PEM_AUTO.protocol
    assert p.seed_bound() == 2**63
    assert p.block_max_seeds().tolist() == [2**63 - 1] + [0] * (p.n_blocks - 1)
    good = _records(PEM_AUTO, np.arange(400) % 64, seed=4)
    hcms = [r for r in good if r["block"] >= 1]
    seeded = [{**r, "seed": 123456789 + i} for i, r in enumerate(hcms)]
    _, dead, stats = _parse_file(PEM_AUTO, _avro(seeded))
    assert stats["accepted"] == 0 and stats["rejected"] == {"BAD_SEED": len(hcms)}
    assert all("outside [0, 1)" in d["message"] for d in dead)
    _, _, ok = _parse_file(PEM_AUTO, _avro([{**r, "seed": 0} for r in hcms]))
    assert ok["accepted"] == len(hcms)
