"""Named domains: the dictionary file's checks, its fingerprint, names to ids."""
import numpy as np
import pyarrow as pa
import pytest

from privfreq.protocols.domain import MAX_NAME_BYTES, OTHER, Domain


def test_load_map_and_fingerprint(tmp_path):
    path = tmp_path / "names.txt"
    path.write_bytes("apple\r\nbanana\nçava 🍌\n".encode())
    d = Domain.load(path)
    assert d.names == ("apple", "banana", "çava 🍌") and d.k == 3
    np.testing.assert_array_equal(d.ids(pa.array(["çava 🍌", "apple", "apple"])), [2, 0, 0])
    # the fingerprint is of the names, not of the file's bytes (line ends) nor of "other"
    (tmp_path / "unix.txt").write_bytes("apple\nbanana\nçava 🍌".encode())
    assert Domain.load(tmp_path / "unix.txt").fingerprint == d.fingerprint
    assert Domain(("apple", "banana", "çava 🍌"), other=True).fingerprint == d.fingerprint
    assert Domain(("banana", "apple", "çava 🍌")).fingerprint != d.fingerprint
    assert d.to_dict() == {"fingerprint": d.fingerprint, "names": 3, "other": False}


def test_unknown_names_error_or_other():
    d = Domain(("a", "b"), other=True)
    np.testing.assert_array_equal(d.ids(["b", "zz", "a", "zz"], unknown="other"), [1, 2, 0, 2])
    assert d.labels() == ["a", "b", OTHER]
    with pytest.raises(ValueError, match=r"row 2: 'zz' is not in the dictionary \(2 unknown"):
        d.ids(["b", "zz", "a", "zz"])
    with pytest.raises(ValueError, match="needs a config made with --unknown other"):
        Domain(("a", "b")).ids(["a"], unknown="other")
    with pytest.raises(ValueError, match="row 2 is an empty item"):
        d.ids(pa.array(["a", None]))
    with pytest.raises(ValueError, match="must be names"):
        d.ids(pa.array([1, 2]))


@pytest.mark.parametrize("content, match", [
    (b"a\n\nb\n", "line 2 is an empty name"),
    (b"a\nb\na\n", "duplicate name 'a' on lines 1 and 3"),
    (b"a\n\xff\xfe\n", "line 2 is not valid UTF-8"),
    (b"", "holds no names"),
    (b"only\n", "at least 2 items"),
    (b"a\n" + b"x" * (MAX_NAME_BYTES + 1) + b"\n", f"line 2 is {MAX_NAME_BYTES + 1} bytes long; "
                                                   f"names must be at most {MAX_NAME_BYTES}"),
])
def test_bad_dictionaries_name_the_line(tmp_path, content, match):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        Domain.load(path)


def test_check_against_a_config():
    d = Domain(("a", "b", "c"))
    d.check(d.to_dict())
    with pytest.raises(ValueError, match="is not the config's"):
        Domain(("a", "b", "d")).check(d.to_dict())
