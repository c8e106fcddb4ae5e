"""Avro schemas of the wire formats, their loaders, and the Parquet schemas of reports and
estimates; the submodules hold their vectorized codecs. Beam-free (numpy, pyarrow, fastavro), so a
client or gateway uses them without Beam:

* ``schemas.columns``: :class:`ReportColumns`, a batch of reports as numpy columns (what readers
  produce and ``transforms.parse`` validates);
* ``schemas.avro``: Avro container writer (vectorized) and byte-range reader, varints;
* ``schemas.parquet``: Parquet writer and row-group-range reader;
* ``schemas.files``: writing a local file whole or not at all; the content digest of an input file.

Files (package data; report schema version 2, ``protocols.config.SCHEMA_VERSION``):

* ``report.avsc`` — one randomized report: ``config_fingerprint: string``, ``protocol: string``,
  ``block: int``, ``seed: long``, ``payload: bytes``; plus, added since (optional, default null),
  ``event_time: null | timestamp-millis`` — when the report was made, read only by streaming
  aggregation (``pipelines/aggregate_streaming.py``; null: the arrival time stands in); and
  ``round: null | long`` — the collection round of a longitudinal collection (``encode
  --round``), estimated separately by ``aggregate``; and, the version-2 addition,
  ``attribute: null | int`` — the attribute index of a sampled multi-attribute report
  (``protocol.wire_attributes`` > 0: SMP, ALLOMFREE); ``block`` is then the inner protocol's block
  within that attribute (the server maps ``(attribute, block)`` to the protocol's flat block with
  ``protocol.flat_block``). null for every other protocol; a report of a protocol with attributes
  that has none, or names one outside ``[0, d)``, is an ``ATTRIBUTE_OUT_OF_RANGE`` dead letter, as
  is a report with an attribute for a protocol without attributes. Batch writers write the five
  version-1 fields (:func:`report_schema`), plus ``round`` when a round is given and ``attribute``
  when the protocol has attributes (:func:`report_schema_with`, the five then those, in
  ``report.avsc`` order).
* ``dead_letter.avsc`` — one rejected input: ``raw: bytes``, ``source: string``,
  ``reason: string`` (``protocols.base.Reason`` name), ``reason_code: int``, ``message: string``.
* reports may also be Parquet with :data:`REPORT_PARQUET_SCHEMA`: the same five fields
  (``config_fingerprint: string``, ``protocol: string`` — both dictionary-encoded —,
  ``block: int32``, ``seed: int64``, ``payload: binary``), none nullable; plus the optional
  nullable ``round: int64`` column (:data:`REPORT_PARQUET_ROUND_FIELD`), written only with a
  round, and the optional nullable ``attribute: int32`` column
  (:data:`REPORT_PARQUET_ATTRIBUTE_FIELD`, version 2), written only for a protocol with
  attributes. Readers accept any integer type for ``block``/``seed``/``round``/``attribute`` and
  plain, large or dictionary strings/binaries.
* estimates are Parquet with :data:`ESTIMATES_SCHEMA` (``item: int64``, ``estimate: float64``,
  ``stderr: float64``; a simulation adds ``true_frequency: float64``).

**Payload encoding.** The payload of a report in block ``j`` is exactly
``protocol.payload_width(j)`` bytes, produced by ``protocol.encode_payloads(j, values)`` and read
back by ``protocol.decode_payloads(j, raw)`` (vectorized over all reports of a block). The two
building blocks are in ``protocols/wire.py``:

* *indices*: the sorted values, each an unsigned little-endian integer of 1, 2 or 4 bytes (the
  smallest that holds ``m − 1``);
* *bitmap*: an ``m``-bit membership vector, LSB first, zero padding bits in the last byte.

GRR sends one index of ``[k]``; SS sends its ω-subset of ``[k]``; MSS sends the ω_j-subset of
``[m_j]`` of block ``j`` — subsets use whichever of the two encodings is shorter for ``(m, ω)``.

**Evolution rule** (dp_accounting-style): fields are only ever *added*, with a default, so old
readers and old files keep working; a field is never removed, renamed or retyped, and the meaning
of an existing field never changes. ``tests/transforms/test_transforms_schemas.py`` pins the
version-1 fields. A collection config states the version its reports need
(``CollectionConfig.schema_version``: 2 for a protocol with attributes, else 1, so the
fingerprints of configs made before version 2 are unchanged).
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

import fastavro
import pyarrow as pa

__all__ = [
    "DEAD_LETTER",
    "ESTIMATES_SCHEMA",
    "REPORT",
    "REPORT_PARQUET_ATTRIBUTE_FIELD",
    "REPORT_PARQUET_ROUND_FIELD",
    "REPORT_PARQUET_SCHEMA",
    "dead_letter_schema",
    "load_schema",
    "report_schema",
    "report_schema_with",
    "report_schema_with_round",
]

REPORT = "report"
DEAD_LETTER = "dead_letter"

# Parquet schema of report files (the columns of report.avsc, same names and meaning). The strings
# are dictionary-encoded: a file holds one or a few distinct values, so readers compare them once
# per batch. Columns may be appended (never removed or retyped), as for report.avsc.
REPORT_PARQUET_SCHEMA = pa.schema([
    pa.field("config_fingerprint", pa.dictionary(pa.int32(), pa.string()), nullable=False),
    pa.field("protocol", pa.dictionary(pa.int32(), pa.string()), nullable=False),
    pa.field("block", pa.int32(), nullable=False),
    pa.field("seed", pa.int64(), nullable=False),
    pa.field("payload", pa.binary(), nullable=False),
])

# The optional round column (report.avsc's ``round``), appended to REPORT_PARQUET_SCHEMA by writers
# given a round; readers of files without it see null rounds.
REPORT_PARQUET_ROUND_FIELD = pa.field("round", pa.int64(), nullable=True)

# The optional attribute column (report.avsc's ``attribute``, version 2), appended (after ``round``
# when both are written) by writers of a protocol with attributes; files without it: null.
REPORT_PARQUET_ATTRIBUTE_FIELD = pa.field("attribute", pa.int32(), nullable=True)

# Parquet schema of estimates.parquet. Extra columns may be appended (never removed or retyped).
ESTIMATES_SCHEMA = pa.schema([
    pa.field("item", pa.int64(), nullable=False),
    pa.field("estimate", pa.float64(), nullable=False),
    pa.field("stderr", pa.float64(), nullable=False),
])


def load_json(name: str) -> dict[str, Any]:
    """The raw JSON of ``schemas/<name>.avsc``."""
    text = resources.files(__name__).joinpath(f"{name}.avsc").read_text()
    return json.loads(text)


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict[str, Any]:
    """The parsed (fastavro) schema of ``schemas/<name>.avsc``; ``ValueError`` for unknown names."""
    if name not in (REPORT, DEAD_LETTER):
        raise ValueError(f"schema: unknown name {name!r}; valid are {[REPORT, DEAD_LETTER]}")
    return fastavro.parse_schema(load_json(name))


# The version-1 report fields: what the batch writers (``encode``, dead-letter raw records, the
# vectorized Avro layout of schemas/avro.py) write, followed by the optional ``round`` and
# ``attribute`` where a report has them (:func:`report_schema_with`). Fields added later are
# optional.
REPORT_V1_FIELDS = ("config_fingerprint", "protocol", "block", "seed", "payload")


@lru_cache(maxsize=None)
def _report_v1_schema() -> dict[str, Any]:
    raw = load_json(REPORT)
    raw["fields"] = [f for f in raw["fields"] if f["name"] in REPORT_V1_FIELDS]
    return fastavro.parse_schema(raw)


def report_schema(optional_fields: bool = False) -> dict[str, Any]:
    """The parsed report schema writers use: the version-1 fields (``REPORT_V1_FIELDS``), which
    is what every batch writer writes for reports without a round or an attribute; a reader of
    ``report.avsc`` fills the optional fields added since with their defaults (null).
    ``optional_fields=True``: every field of ``report.avsc`` (e.g. to write reports that carry an
    ``event_time``)."""
    return load_schema(REPORT) if optional_fields else _report_v1_schema()


# The optional fields a batch writer may append to the version-1 ones, in report.avsc order.
REPORT_TAIL_FIELDS = ("round", "attribute")


@lru_cache(maxsize=None)
def report_schema_with(round_: bool = False, attribute: bool = False) -> dict[str, Any]:
    """The parsed writer schema of batch-written reports: the version-1 fields, then ``round``
    (reports of a round: ``encode --round``) and/or ``attribute`` (reports of a protocol with
    attributes), in ``report.avsc`` order. The vectorized reader decodes every such layout."""
    keep = REPORT_V1_FIELDS + (("round",) if round_ else ()) + (("attribute",) if attribute else ())
    raw = load_json(REPORT)
    raw["fields"] = [f for f in raw["fields"] if f["name"] in keep]
    return fastavro.parse_schema(raw)


def report_schema_with_round() -> dict[str, Any]:
    """The parsed writer schema of reports that carry a round: the version-1 fields, then
    ``round`` (``report_schema_with(round_=True)``)."""
    return report_schema_with(round_=True)


def dead_letter_schema() -> dict[str, Any]:
    return load_schema(DEAD_LETTER)
