"""protocols/wire.py: the vectorized bitmap decoder against the straightforward reference (unpack,
reduce, 2-D nonzero) it replaced, on valid and invalid rows and across chunk boundaries."""
import numpy as np
import pytest

import privfreq.protocols.wire as wire
from privfreq.protocols.base import Reason
from privfreq.protocols.wire import decode_bitmap, encode_bitmap


def reference_decode_bitmap(raw, m, w):
    """The implementation before the chunked flatnonzero one (same contract)."""
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    n = raw.shape[0]
    bits = np.unpackbits(raw, axis=1, bitorder="little")
    reason = np.zeros(n, dtype=np.int64)
    reason[bits[:, m:].any(axis=1)] = Reason.BAD_PADDING
    bits = bits[:, :m]
    ones = bits.sum(axis=1, dtype=np.int64)
    reason[(ones != w) & (reason == Reason.OK)] = Reason.BAD_LENGTH
    values = np.zeros((n, w), dtype=np.int64)
    good = reason == Reason.OK
    if good.any():
        rr, cc = np.nonzero(bits[good])
        values[good] = cc.reshape(-1, w)
    return values, reason


def random_subsets(rng, n, m, w):
    return np.sort(np.argsort(rng.random((n, m)), axis=1)[:, :w], axis=1)


def mixed_rows(rng, n, m, w):
    """Valid rows, rows with w ± 1 members, all-zero rows, rows with padding bits (when m % 8),
    rows with both a wrong count and padding bits, all shuffled."""
    raw = encode_bitmap(random_subsets(rng, n, m, w), m)
    kind = rng.integers(0, 6, n)
    if w + 1 <= m:
        more = encode_bitmap(random_subsets(rng, n, m, w + 1), m)
        raw[kind == 1] = more[kind == 1]
    if w >= 1:
        less = encode_bitmap(random_subsets(rng, n, m, w - 1), m) if w > 1 else np.zeros_like(raw)
        raw[kind == 2] = less[kind == 2]
    raw[kind == 3] = 0
    if m % 8:
        bit = np.uint8(1 << (m % 8 + rng.integers(0, 8 - m % 8)))
        raw[kind == 4, -1] |= bit
        raw[(kind == 5) & (np.arange(n) % 2 == 0), -1] |= np.uint8(0x80)
        raw[kind == 5, 0] ^= np.uint8(1)
    return raw


def assert_same(raw, m, w):
    got_v, got_r = decode_bitmap(raw, m, w)
    ref_v, ref_r = reference_decode_bitmap(raw, m, w)
    assert got_v.dtype == np.int64 and got_r.dtype == np.int64
    np.testing.assert_array_equal(got_r, ref_r)
    np.testing.assert_array_equal(got_v, ref_v)
    # pad_to: the same rows, then -1 columns.
    pad_v, pad_r = decode_bitmap(raw, m, w, pad_to=w + 3)
    np.testing.assert_array_equal(pad_r, ref_r)
    np.testing.assert_array_equal(pad_v[:, :w], ref_v)
    assert (pad_v[:, w:] == -1).all()
    return got_v, got_r


@pytest.mark.parametrize("m,w", [(1021, 275), (1009, 271), (16, 6), (7, 3), (8, 1), (13, 13),
                                 (300, 81), (1, 1), (9, 2)])
def test_valid_rows_match_reference(m, w):
    rng = np.random.default_rng(m * 1000 + w)
    vals = random_subsets(rng, 257, m, w)
    got_v, got_r = assert_same(encode_bitmap(vals, m), m, w)
    assert (got_r == Reason.OK).all()
    np.testing.assert_array_equal(got_v, vals)


@pytest.mark.parametrize("m,w", [(1021, 275), (1024, 275), (16, 6), (7, 3), (13, 1), (13, 12),
                                 (9, 2)])
def test_invalid_rows_match_reference(m, w):
    rng = np.random.default_rng(m + w)
    raw = mixed_rows(rng, 400, m, w)
    _, reason = assert_same(raw, m, w)
    assert (reason == Reason.OK).any() and (reason == Reason.BAD_LENGTH).any()
    assert (reason == Reason.BAD_PADDING).any() == bool(m % 8)


def test_specific_reasons():
    m, w = 13, 3   # 2 bytes, bits 13-15 are padding
    raw = np.array([[0b111, 0],              # valid {0, 1, 2}
                    [0b1111, 0],             # 4 members
                    [0, 0],                  # none
                    [0b111, 0b100000],       # padding bit 13
                    [0b11, 0b10000000],      # padding bit 15 and 2 members: padding wins
                    [0, 0b11100]],           # valid {10, 11, 12}
                   dtype=np.uint8)
    values, reason = assert_same(raw, m, w)
    assert reason.tolist() == [Reason.OK, Reason.BAD_LENGTH, Reason.BAD_LENGTH,
                               Reason.BAD_PADDING, Reason.BAD_PADDING, Reason.OK]
    assert values[0].tolist() == [0, 1, 2] and values[5].tolist() == [10, 11, 12]


def test_empty_and_all_bad():
    for m, w in [(1021, 275), (7, 3)]:
        width = (m + 7) // 8
        values, reason = assert_same(np.zeros((0, width), np.uint8), m, w)
        assert values.shape == (0, w) and reason.shape == (0,)
        values, reason = assert_same(np.zeros((5, width), np.uint8), m, w)
        assert (reason == Reason.BAD_LENGTH).all()
        values, _ = decode_bitmap(np.zeros((0, width), np.uint8), m, w, pad_to=w + 2)
        assert values.shape == (0, w + 2)


@pytest.mark.parametrize("chunk_bytes", [1, 13, 14, 3 * 13, 1000])
def test_chunk_boundaries(monkeypatch, chunk_bytes):
    # m = 13: 1, 1, 1, 3 and 76 rows per chunk; 101 rows leave a partial last chunk; some chunks
    # are all valid, some mixed, some (the runs of zero rows) all rejected.
    monkeypatch.setattr(wire, "BITMAP_DECODE_BYTES", chunk_bytes)
    rng = np.random.default_rng(chunk_bytes)
    m, w = 13, 4
    raw = mixed_rows(rng, 101, m, w)
    raw[40:60] = 0
    assert_same(raw, m, w)
    valid = encode_bitmap(random_subsets(rng, 101, m, w), m)
    values, reason = assert_same(valid, m, w)
    assert (reason == Reason.OK).all()
    m, w = 1021, 275
    assert_same(mixed_rows(rng, 23, m, w), m, w)


def test_rejects_rows_too_short_for_m():
    with pytest.raises(ValueError, match="cannot hold"):
        decode_bitmap(np.zeros((2, 1), np.uint8), 9, 2)
    with pytest.raises(ValueError, match="pad_to"):
        decode_bitmap(np.zeros((2, 2), np.uint8), 9, 2, pad_to=1)
