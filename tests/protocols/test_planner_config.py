"""Planner, collection config and the client-core import rule."""
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from privfreq.protocols import CollectionConfig, protocol_ids
from privfreq.protocols.config import SCHEMA_VERSION
from privfreq.protocols.mss import ModularSubsetSelection as MSS
from privfreq.protocols.planner import best_moduli, plan, primes_up_to
from privfreq.protocols.subset_selection import SubsetSelection


def test_primes():
    assert list(primes_up_to(30)) == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]


def test_plan_is_ranked_valid_and_deterministic():
    cands = plan(1024, 1.0, ell=2, top=5)
    assert cands == plan(1024, 1.0, ell=2, top=5)
    assert [c.predicted_mse_n1 for c in cands] == sorted(c.predicted_mse_n1 for c in cands)
    ss = SubsetSelection(1024, 1.0).predicted_mse(1)
    for c in cands:
        proto = MSS(1024, 1.0, c.moduli)   # every candidate is a valid configuration
        assert np.isclose(proto.predicted_mse(1), c.predicted_mse_n1)
        assert np.isclose(c.mse_ratio_ss, c.predicted_mse_n1 / ss)
        assert c.bits == proto.information_bits() and c.condition_number <= 10


def test_plan_max_mse_factor_trades_accuracy_for_shorter_messages():
    best = plan(1024, 2.0, ell=2, top=1)[0]
    short = plan(1024, 2.0, ell=2, max_mse_factor=1.3, top=3)
    assert all(c.mse_ratio_ss <= 1.3 for c in short)
    assert [c.bits for c in short] == sorted(c.bits for c in short)
    assert short[0].bits < best.bits


def test_plan_max_bits_and_errors():
    cands = plan(512, 4.0, ell=3, max_bits=60, top=3)
    assert all(c.bits <= 60 and c.ell == 3 for c in cands)
    with pytest.raises(ValueError, match="no moduli"):
        plan(512, 4.0, ell=2, max_bits=5)
    with pytest.raises(ValueError, match="epsilon"):
        plan(512, -1.0)
    with pytest.raises(ValueError, match="max_mse_factor"):
        plan(512, 1.0, max_mse_factor=0.5)
    assert len(best_moduli(200, 1.0, ell=2)) == 2


def test_config_round_trip_and_fingerprint(tmp_path):
    cfg = CollectionConfig("mss", {"k": 100, "epsilon": 1.0, "moduli": [53, 59]})
    path = tmp_path / "c.json"
    cfg.save(path)
    loaded = CollectionConfig.load(path)
    assert loaded.fingerprint == cfg.fingerprint and loaded.protocol == cfg.protocol
    # Equal configs serialise identically, whatever the input spelling (int vs float ε, tuple).
    same = CollectionConfig("mss", {"k": 100, "epsilon": 1, "moduli": (53, 59), "ridge": 0})
    assert same.fingerprint == cfg.fingerprint
    other = CollectionConfig("mss", {"k": 100, "epsilon": 1.5, "moduli": [53, 59]})
    assert other.fingerprint != cfg.fingerprint
    tampered = json.loads(path.read_text())
    tampered["params"]["epsilon"] = 2.0
    with pytest.raises(ValueError, match="fingerprint"):
        CollectionConfig.from_dict(tampered)


def test_config_schema_version_is_what_the_protocol_needs():
    # Configs of protocols without attributes keep version 1, hence their fingerprints from
    # before report schema version 2 (the canonical JSON of {protocol, params, schema_version}).
    grr = CollectionConfig("grr", {"k": 5, "epsilon": 1.0})
    canonical = '{"params":{"epsilon":1.0,"k":5},"protocol":"grr","schema_version":1}'
    assert grr.schema_version == 1
    assert grr.fingerprint == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert CollectionConfig.from_dict({"protocol": "grr", "params": {"k": 5, "epsilon": 1.0}}
                                      ).fingerprint == grr.fingerprint
    assert CollectionConfig.of(grr.protocol).schema_version == 1
    v2 = CollectionConfig("grr", {"k": 5, "epsilon": 1.0}, 2)  # stating a newer one is allowed
    assert v2.schema_version == 2 and v2.fingerprint != grr.fingerprint
    assert CollectionConfig.from_json(v2.to_json()).fingerprint == v2.fingerprint
    assert SCHEMA_VERSION == 2
    # A protocol whose reports name their attribute needs version 2 (report field 'attribute').
    smp = {"attributes": ["a", "b"], "domains": [5, 14], "epsilon": 1.0, "inner": "grr"}
    cfg = CollectionConfig("smp", smp)
    assert cfg.protocol.wire_attributes == 2 and cfg.schema_version == 2
    assert CollectionConfig.from_json(cfg.to_json()).fingerprint == cfg.fingerprint
    with pytest.raises(ValueError, match="schema_version 1 cannot carry protocol 'smp'"):
        CollectionConfig("smp", smp, 1)
    with pytest.raises(ValueError, match="schema_version"):
        CollectionConfig.from_dict({"protocol": "grr", "params": {"k": 5, "epsilon": 1},
                                    "schema_version": None})


@pytest.mark.parametrize("doc,match", [
    ({"protocol": "nope", "params": {}}, "valid ids"),
    ({"protocol": "grr", "params": {"k": 5}}, "missing"),
    ({"protocol": "grr", "params": {"k": 5, "epsilon": 1, "x": 1}}, "unknown parameter"),
    ({"protocol": "grr", "params": {"k": 5, "epsilon": 1}, "schema_version": 9}, "schema_version"),
    ([1, 2], "JSON object"),
])
def test_config_errors(doc, match):
    with pytest.raises(ValueError, match=match):
        CollectionConfig.from_dict(doc)


def test_registry_lists_every_protocol():
    assert {"mss", "ss", "grr", "oue", "sue", "olh", "hr", "pgr", "rappor"} <= set(protocol_ids())


def test_client_core_does_not_import_beam():
    code = ("import sys, privfreq.protocols, privfreq.protocols.planner, privfreq.protocols.attacks, "
            "privfreq.protocols.postprocess; "
            "print(any(m.startswith('apache_beam') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
