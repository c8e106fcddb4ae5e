"""The version-1 schemas are pinned: fields may only be added (with defaults), never changed."""
import fastavro
import pyarrow as pa
import pytest

from privfreq import schemas

V1_REPORT = {"config_fingerprint": "string", "protocol": "string", "block": "int",
             "seed": "long", "payload": "bytes"}
V1_DEAD_LETTER = {"raw": "bytes", "source": "string", "reason": "string", "reason_code": "int",
                  "message": "string"}


@pytest.mark.parametrize("name,pinned", [(schemas.REPORT, V1_REPORT),
                                         (schemas.DEAD_LETTER, V1_DEAD_LETTER)])
def test_v1_fields_are_kept_and_new_fields_have_defaults(name, pinned):
    fields = schemas.load_json(name)["fields"]
    by_name = {f["name"]: f for f in fields}
    for field, typ in pinned.items():
        assert by_name[field]["type"] == typ, field
    for f in fields:
        if f["name"] not in pinned:
            assert "default" in f, f"added field {f['name']} needs a default"
    assert [f["name"] for f in fields][:len(pinned)] == list(pinned)  # order is part of the format


def test_estimates_schema_is_pinned():
    assert list(schemas.ESTIMATES_SCHEMA) == [
        pa.field("item", pa.int64(), nullable=False),
        pa.field("estimate", pa.float64(), nullable=False),
        pa.field("stderr", pa.float64(), nullable=False)]


def test_load_schema_parses_and_rejects_unknown_names():
    assert fastavro.parse_schema(schemas.report_schema())["name"] == "privfreq.v1.Report"
    with pytest.raises(ValueError, match="unknown name 'nope'"):
        schemas.load_schema("nope")
