"""Shared fixtures of the transforms/pipelines tests: configs and Avro report files."""
from __future__ import annotations

import io

import fastavro
import numpy as np

from privfreq import schemas
from privfreq.protocols.config import CollectionConfig

# Indices-encoded MSS blocks (ω = 2 of m = 251 and 256): residues >= m_j and repeats are expressible.
MSS_INDICES = CollectionConfig("mss", {"k": 500, "epsilon": 4.8, "moduli": [251, 256]})
# Bitmap-encoded MSS blocks (ω = 3 of 7 in 1 byte, ω = 6 of 16 in 2 bytes): wrong-size subsets and
# padding bits are expressible.
MSS_BITMAP = CollectionConfig("mss", {"k": 20, "epsilon": 0.5, "moduli": [7, 16]})
# "No-noise" configs: ε = 60 makes p = 1 - O(e^-60), so every report carries the true item and the
# unbiased estimate equals the empirical frequencies to float precision.
GRR_EXACT = CollectionConfig("grr", {"k": 8, "epsilon": 60.0})
SS_EXACT = CollectionConfig("ss", {"k": 16, "epsilon": 60.0})
MSS_EXACT = CollectionConfig("mss", {"k": 30, "epsilon": 60.0, "moduli": [29, 31]})


def records_for(config: CollectionConfig, items, seed: int = 0) -> list[dict]:
    """Valid report.avsc records of ``items`` under ``config``."""
    p = config.protocol
    batch = p.randomize(np.asarray(items, dtype=np.int64), np.random.default_rng(seed))
    out = []
    for i in range(len(batch)):
        j = int(batch.block[i])
        payload = p.encode_payloads(j, batch.values[i:i + 1])
        out.append({"config_fingerprint": config.fingerprint, "protocol": p.protocol_id,
                    "block": j, "seed": int(batch.seed[i]), "payload": payload.tobytes()})
    return out


def avro_bytes(records, schema=None, sync_interval: int = 1000) -> bytes:
    buf = io.BytesIO()
    fastavro.writer(buf, fastavro.parse_schema(schema) if schema else schemas.report_schema(),
                    records, sync_interval=sync_interval)
    return buf.getvalue()


def write_avro(path, records, schema=None, sync_interval: int = 1000) -> None:
    with open(path, "wb") as f:
        f.write(avro_bytes(records, schema, sync_interval))
