"""Collection config: protocol id + params + schema version, with a stable fingerprint.

Every report carries the fingerprint of the config it was made under; the server rejects reports of
any other fingerprint. The fingerprint is the first 16 hex digits of SHA-256 over the canonical JSON
(sorted keys, no whitespace, floats in ``repr`` form) of ``{protocol, params, schema_version}``,
plus ``domain`` when the items have names (``protocols.domain``: the dictionary's fingerprint,
size and whether an explicit "other" item is reserved), so that reports made against one
dictionary are never counted against another.

``schema_version`` is the report schema version the collection needs: 2 for a protocol whose
reports name their attribute (``protocol.wire_attributes`` > 0; report.avsc's ``attribute`` field,
added in version 2), else 1. It defaults to that minimum, so every config made before version 2
keeps its fingerprint; a config may state 2 for any protocol, never less than its protocol needs.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from privfreq.protocols.base import FrequencyProtocol, get_protocol_class

__all__ = ["SCHEMA_VERSION", "SCHEMA_VERSIONS", "CollectionConfig", "needed_schema_version"]


def needed_schema_version(protocol: FrequencyProtocol) -> int:
    """The oldest report schema version that can carry ``protocol``'s reports."""
    return 2 if protocol.wire_attributes else 1

SCHEMA_VERSION = 2  # newest version of schemas/report.avsc this code writes and reads
SCHEMA_VERSIONS = (1, 2)  # every version a config may state


@dataclass(frozen=True)
class CollectionConfig:
    """What a collection is: which protocol, with which parameters, on which report schema."""

    protocol_id: str
    params: dict[str, Any]
    schema_version: int | None = None  # None: the protocol's needed_schema_version
    # Items with names (protocols.domain): the dictionary's {"fingerprint", "names", "other"};
    # None: the items are ids. Serialised (and fingerprinted) only when present.
    domain: dict[str, Any] | None = None

    def __post_init__(self):
        v = self.schema_version
        if v is not None and (not isinstance(v, (int, float)) or v not in SCHEMA_VERSIONS):
            raise ValueError(f"CollectionConfig: schema_version must be one of "
                             f"{list(SCHEMA_VERSIONS)}, got {v!r}")
        # Fail fast: building the protocol validates the id and every parameter.
        needed = needed_schema_version(self.protocol)
        if v is None:
            object.__setattr__(self, "schema_version", needed)
        elif v < needed:
            raise ValueError(f"CollectionConfig: schema_version {v!r} cannot carry protocol "
                             f"{self.protocol_id!r}, whose reports name their attribute (report "
                             f"field 'attribute', schema version {needed}); state "
                             f"schema_version {needed} or leave it out")
        if self.domain is not None:
            self._check_domain()

    def _check_domain(self) -> None:
        d = self.domain
        ok = (isinstance(d, dict) and set(d) == {"fingerprint", "names", "other"}
              and isinstance(d["fingerprint"], str) and isinstance(d["other"], bool)
              and isinstance(d["names"], int) and not isinstance(d["names"], bool))
        if not ok:
            raise ValueError(f"CollectionConfig: domain must be {{\"fingerprint\": str, "
                             f"\"names\": int, \"other\": bool}}, got {d!r}")
        k = getattr(self.protocol, "k", None)
        if getattr(self.protocol, "multi_attribute", False) or k != d["names"] + d["other"]:
            raise ValueError(f"CollectionConfig: a domain of {d['names']} names"
                             f"{' and other' if d['other'] else ''} needs a one-attribute "
                             f"protocol with k = {d['names'] + d['other']}, got "
                             f"{self.protocol_id!r} with k = {k}")

    @classmethod
    def of(cls, protocol: FrequencyProtocol) -> "CollectionConfig":
        return cls(protocol.protocol_id, protocol.to_params())

    @cached_property
    def protocol(self) -> FrequencyProtocol:
        return get_protocol_class(self.protocol_id).from_params(dict(self.params))

    def to_dict(self) -> dict[str, Any]:
        # Round-trip through the protocol so that equal configs serialise identically.
        out = {"protocol": self.protocol_id, "params": self.protocol.to_params(),
               "schema_version": self.schema_version}
        if self.domain is not None:
            out["domain"] = dict(self.domain)
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Any) -> "CollectionConfig":
        if not isinstance(d, dict):
            raise ValueError(f"CollectionConfig: expected a JSON object, got {type(d).__name__}")
        missing = {"protocol", "params"} - set(d)
        if missing:
            raise ValueError(f"CollectionConfig: missing field(s) {sorted(missing)}")
        unknown = set(d) - {"protocol", "params", "schema_version", "fingerprint", "domain"}
        if unknown:
            raise ValueError(f"CollectionConfig: unknown field(s) {sorted(unknown)}")
        if not isinstance(d["params"], dict):
            raise ValueError("CollectionConfig: params must be a JSON object")
        if "schema_version" in d and d["schema_version"] is None:
            raise ValueError(f"CollectionConfig: schema_version must be one of "
                             f"{list(SCHEMA_VERSIONS)}, got None")
        cfg = cls(d["protocol"], dict(d["params"]), d.get("schema_version"), d.get("domain"))
        if "fingerprint" in d and d["fingerprint"] != cfg.fingerprint:
            raise ValueError(f"CollectionConfig: stored fingerprint {d['fingerprint']!r} does not "
                             f"match the content ({cfg.fingerprint})")
        return cfg

    @classmethod
    def from_json(cls, text: str) -> "CollectionConfig":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"CollectionConfig: not valid JSON ({e})") from None
        return cls.from_dict(d)

    @classmethod
    def load(cls, path: str | Path) -> "CollectionConfig":
        return cls.from_json(Path(path).read_text())

    def save(self, path: str | Path) -> None:
        d = self.to_dict()
        d["fingerprint"] = self.fingerprint
        Path(path).write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")

    @cached_property
    def fingerprint(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
