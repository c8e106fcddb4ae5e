"""``privfreq encode`` input files: CSV with and without a header, Parquet, and the errors for
empty, header-only and non-integer inputs (numpy and pyarrow only, no Beam pipeline)."""
import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from privfreq.pipelines import cli, encode
from privfreq.protocols.config import CollectionConfig

CONFIG = CollectionConfig("grr", {"k": 10, "epsilon": 60.0})  # ε = 60: reports equal the items


def _encode(tmp_path, name, text):
    """Encode ``text`` written to ``tmp_path/name`` through the CLI: the reported items, sorted."""
    (tmp_path / "c.json").write_text(CONFIG.to_json())
    (tmp_path / name).write_text(text)
    out = tmp_path / "r.avro"
    assert cli.main(["encode", "--config", str(tmp_path / "c.json"), "--input",
                     str(tmp_path / name), "--output", str(out), "--seed", "1"]) == 0
    with open(out, "rb") as f:
        records = list(fastavro.reader(f))
    return sorted(r["payload"][0] for r in records)  # GRR, k = 10: a 1-byte payload, the item


def _fails(tmp_path, name, text, match):
    (tmp_path / "c.json").write_text(CONFIG.to_json())
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=match):
        cli.main(["encode", "--config", str(tmp_path / "c.json"), "--input",
                  str(tmp_path / name), "--output", str(tmp_path / "r.avro")])
    assert not (tmp_path / "r.avro").exists()


@pytest.mark.parametrize("text", ["5\n6\n7\n", "5\n6\n7", "5\r\n6\r\n7\r\n", "\ufeff5\n6\n7\n",
                                  "5\n\n6\n7\n"])
def test_headerless_csv_keeps_every_item(tmp_path, text):
    assert _encode(tmp_path, "items.csv", text) == [5, 6, 7]


@pytest.mark.parametrize("text", ["item\n5\n6\n7\n", "id,item\n0,5\n1,6\n2,7\n", "x\n5\n6\n7\n",
                                  "item,3\n5,0\n6,0\n7,0\n", "\"item\"\n5\n6\n7\n"])
def test_csv_with_header(tmp_path, text):
    assert _encode(tmp_path, "items.csv", text) == [5, 6, 7]


def test_read_items_headerless_and_header_agree(tmp_path):
    (tmp_path / "a.csv").write_text("3\n0\n9\n")
    (tmp_path / "b.csv").write_text("item\n3\n0\n9\n")
    pq.write_table(pa.table({"item": pa.array([3, 0, 9], pa.int32())}), tmp_path / "c.parquet")
    for name in ("a.csv", "b.csv", "c.parquet"):
        items = encode.read_items(str(tmp_path / name))
        assert items.dtype == np.int64 and items.tolist() == [3, 0, 9]


@pytest.mark.parametrize("text", ["", "\n", "item\n", "item\n\n"])
def test_csv_without_items(tmp_path, text):
    _fails(tmp_path, "items.csv", text, "has no items")


def test_parquet_without_items(tmp_path):
    pq.write_table(pa.table({"item": pa.array([], pa.int64())}), tmp_path / "e.parquet")
    with pytest.raises(ValueError, match="has no items"):
        encode.read_items(str(tmp_path / "e.parquet"))


@pytest.mark.parametrize("text, match", [
    ("item\n5\nabc\n7\n", r"row 2: 'abc' is not an integer item"),
    ("5\n6\n7.5\n", r"row 3: '7.5' is not an integer item"),
    ("item\n5\nNA\n", r"row 2: 'NA' is not an integer item"),
    ("item\n5\n99999999999999999999\n", r"row 2: '99999999999999999999' is not an integer"),
    ("id,item\n0,5\n1,\n", r"row 2: column 'item' is empty"),
])
def test_non_integer_item_names_the_row(tmp_path, text, match):
    _fails(tmp_path, "items.csv", text, match)


@pytest.mark.parametrize("text", ["5.0\n6\n", "5,6\n7,8\n", "-1e3\n5\n"])
def test_numeric_first_line_that_is_not_one_integer_is_an_error(tmp_path, text):
    _fails(tmp_path, "items.csv", text, "a CSV without a header must be a single column")


def test_csv_needs_an_item_column(tmp_path):
    _fails(tmp_path, "items.csv", "a,b\n1,2\n", "needs a column named 'item'")
