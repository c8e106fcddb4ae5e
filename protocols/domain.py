"""Items with names: a known dictionary of names mapped to the ids ``[0, k)`` (SPEC §9).

A dictionary file holds one name per line, UTF-8; item ``i`` is the name on line ``i + 1``.
With ``other`` the domain gains one explicit item, ``k − 1``, that every name outside the
dictionary maps under ``encode --unknown other``; otherwise such a name is an error. The
collection config carries the dictionary's fingerprint (``Domain.fingerprint``: the first 16 hex
digits of SHA-256 over the names, each UTF-8 encoded and ended by a newline), its size and
``other``, so a report can never be decoded against another dictionary.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["MAX_NAME_BYTES", "OTHER", "Domain", "read_lines"]

# Longest name in bytes (UTF-8): 2048 covers URLs as browsers and sitemaps cap them (2 KB), app
# ids and words by far; longer lines are almost surely not names (a binary or joined file).
MAX_NAME_BYTES = 2048
OTHER = "(other)"   # label of the explicit "other" item in outputs


def read_lines(path: str | Path, what: str) -> list[str]:
    """The lines of a UTF-8 text file (``\r\n`` accepted, one final newline allowed); invalid
    UTF-8 or no line at all is a ``ValueError`` that names ``what``, the file and the line."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ValueError(f"{what}: {str(path)!r} line {line} is not valid UTF-8 (byte "
                         f"{e.start})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise ValueError(f"{what}: {str(path)!r} holds no names")
    return [x[:-1] if x.endswith("\r") else x for x in lines]


@dataclass(frozen=True)
class Domain:
    """The names of items ``0 .. len(names) − 1`` and whether item ``len(names)`` is "other"."""

    names: tuple[str, ...]
    other: bool = False

    def __post_init__(self):
        seen: dict[str, int] = {}
        for i, name in enumerate(self.names):
            where = f"line {i + 1}"
            if not isinstance(name, str) or not name:
                raise ValueError(f"domain: {where} is an empty name")
            size = len(name.encode("utf-8"))
            if size > MAX_NAME_BYTES:
                raise ValueError(f"domain: {where} is {size} bytes long; names must be at most "
                                 f"{MAX_NAME_BYTES} bytes (UTF-8)")
            if name in seen:
                raise ValueError(f"domain: duplicate name {name!r} on lines {seen[name] + 1} and "
                                 f"{i + 1}")
            seen[name] = i
        if len(self.names) + self.other < 2:
            raise ValueError(f"domain: needs at least 2 items, got {len(self.names)} name(s)"
                             f"{' and other' if self.other else ''}")

    @classmethod
    def load(cls, path: str | Path, other: bool = False) -> "Domain":
        """Read a dictionary file (one name per line, UTF-8; ``\\r\\n`` line ends accepted, one
        final newline allowed). Errors name the line: invalid UTF-8, an empty or over-long name,
        a duplicate."""
        names = tuple(read_lines(path, "domain"))
        try:
            return cls(names, other)
        except ValueError as e:
            raise ValueError(f"{e} (in {str(path)!r})") from None

    @classmethod
    def for_config(cls, path: str | Path, recorded: dict | None) -> "Domain":
        """The dictionary at ``path``, checked against the one a config ``recorded``."""
        if recorded is None:
            raise ValueError("domain: the config was made without --domain (its items are ids); "
                             "drop --domain or make the config with it")
        domain = cls.load(path, other=bool(recorded.get("other")))
        domain.check(recorded)
        return domain

    @property
    def k(self) -> int:
        return len(self.names) + self.other

    @cached_property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for name in self.names:
            h.update(name.encode("utf-8") + b"\n")
        return h.hexdigest()[:16]

    def to_dict(self) -> dict:
        """What the collection config records of the dictionary."""
        return {"fingerprint": self.fingerprint, "names": len(self.names), "other": self.other}

    def check(self, recorded: dict) -> None:
        """``ValueError`` unless this dictionary is the one ``recorded`` in a config."""
        if recorded != self.to_dict():
            raise ValueError(f"domain: this dictionary ({self.to_dict()}) is not the config's "
                             f"({recorded}); use the names file the config was made with")

    @cached_property
    def _value_set(self) -> pa.Array:
        return pa.array(self.names, pa.string())

    def ids(self, values, unknown: str = "error") -> np.ndarray:
        """int64 ids of names (a pyarrow string array or a sequence of str), vectorized. A name
        outside the dictionary is a ``ValueError`` naming it and its row (rows count from 1), or
        with ``unknown="other"`` the other item (the domain must have one)."""
        if unknown not in ("error", "other"):
            raise ValueError(f"domain: unknown must be 'error' or 'other', got {unknown!r}")
        if unknown == "other" and not self.other:
            raise ValueError("domain: --unknown other needs a config made with --unknown other "
                             "(its domain reserves the 'other' item)")
        arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(
            list(values), pa.string())
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            raise ValueError(f"domain: items must be names (strings), got {arr.type}")
        if arr.null_count:
            row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0]) + 1
            raise ValueError(f"domain: row {row} is an empty item")
        idx = pc.index_in(arr, value_set=self._value_set)
        missing = idx.is_null().to_numpy(zero_copy_only=False)
        out = idx.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        if missing.any():
            if unknown == "error":
                row = int(np.flatnonzero(missing)[0])
                raise ValueError(f"domain: row {row + 1}: {arr[row].as_py()!r} is not in the "
                                 f"dictionary ({missing.sum()} unknown name(s) in all; "
                                 f"`encode --unknown other` counts them as one item)")
            out[missing] = len(self.names)
        return out

    def labels(self) -> list[str]:
        """The label of every item id (the names, then ``OTHER``)."""
        return list(self.names) + ([OTHER] if self.other else [])
