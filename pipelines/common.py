"""Shared plumbing of the pipeline entry points: runner defaults, atomic output, result writing."""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from privfreq import schemas
from privfreq.protocols.base import Estimate
from privfreq.protocols.config import CollectionConfig

__all__ = ["DEFAULT_RUNNER", "TOP_ITEMS", "commit_files", "commit_output", "discard_output", "pipeline_options",
           "staged_output", "staging_dir", "write_bytes_atomic", "write_results", "write_text_atomic"]

# In-process and offline. DirectRunner in Beam 2.77 may switch to Prism, which downloads a binary.
DEFAULT_RUNNER = "FnApiRunner"
TOP_ITEMS = 10

ESTIMATES = "estimates.parquet"
SUMMARY = "summary.json"
PLOT = "estimates.png"
DEAD_LETTERS = "dead_letters"


def pipeline_options(beam_args: list[str], save_main_session: bool) -> PipelineOptions:
    """PipelineOptions from the unparsed flags, with ``--runner=FnApiRunner`` unless one is given."""
    args = list(beam_args)
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args.append(f"--runner={DEFAULT_RUNNER}")
    options = PipelineOptions(args)
    options.view_as(SetupOptions).save_main_session = save_main_session
    return options


def _is_local(path: str) -> bool:
    return "://" not in path


def staging_dir(final: str) -> str:
    """A fresh sibling directory of ``final`` to write into before :func:`commit_output`."""
    final = final.rstrip("/")
    tmp = f"{final}.tmp-{uuid.uuid4().hex[:12]}"
    if _is_local(tmp):
        os.makedirs(tmp)
    return tmp


def commit_output(tmp: str, final: str) -> None:
    """Publish ``tmp`` as ``final``.

    Local paths: one directory rename (an existing ``final`` is moved aside first, then deleted),
    so readers see the old or the new complete output, never a half-written one. Object stores
    (``gs://`` ...) have no directory rename: files are renamed one by one into ``final``.
    """
    final = final.rstrip("/")
    if _is_local(final):
        parent = os.path.dirname(os.path.abspath(final))
        os.makedirs(parent, exist_ok=True)
        old = None
        if os.path.exists(final):
            old = f"{final}.old-{uuid.uuid4().hex[:12]}"
            os.rename(final, old)
        os.rename(tmp, final)
        if old:
            shutil.rmtree(old)
        return
    matched = FileSystems.match([tmp + "/**"])[0].metadata_list
    src = [m.path for m in matched]
    dst = [final + p[len(tmp):] for p in src]
    FileSystems.rename(src, dst)
    FileSystems.delete([tmp])


def discard_output(tmp: str) -> None:
    """Remove a staging directory (best effort: it is never published either way)."""
    if _is_local(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        with contextlib.suppress(Exception):
            FileSystems.delete([tmp])


def commit_files(tmp: str, final: str) -> None:
    """Publish every file of ``tmp`` into ``final`` by one rename each, keeping the other files
    of ``final`` (e.g. hand-written notes beside a report); then remove ``tmp``."""
    final = final.rstrip("/")
    if not _is_local(final):
        commit_output(tmp, final)  # object stores: files are renamed one by one anyway
        return
    for root, _, files in os.walk(tmp):
        dest = os.path.join(final, os.path.relpath(root, tmp))
        os.makedirs(dest, exist_ok=True)
        for name in files:
            os.replace(os.path.join(root, name), os.path.join(dest, name))
    shutil.rmtree(tmp)


@contextlib.contextmanager
def staged_output(final: str, keep_other_files: bool = False):
    """``with staged_output(DIR) as tmp:`` write into ``tmp``; on success it becomes ``DIR``
    (:func:`commit_output`; with ``keep_other_files``, its files replace their namesakes in
    ``DIR`` one rename each, :func:`commit_files`), on failure it is removed and ``DIR`` is left
    untouched."""
    tmp = staging_dir(final)
    try:
        yield tmp
    except BaseException:
        discard_output(tmp)
        raise
    (commit_files if keep_other_files else commit_output)(tmp, final)


def _write_bytes(path: str, data: bytes) -> None:
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write ``path`` whole or not at all: a hidden temporary sibling, then a rename (an existing
    ``path`` is replaced). For single files written outside a staged directory."""
    head, _, name = path.rstrip("/").rpartition("/")
    tmp = f"{head}/.{name}.tmp-{uuid.uuid4().hex[:12]}" if head else f".{name}.tmp-{uuid.uuid4().hex[:12]}"
    if _is_local(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return
    _write_bytes(tmp, data)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def write_text_atomic(path: str, text: str) -> None:
    """:func:`write_bytes_atomic` of UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"))


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def top_items(est: Estimate, truth_f: np.ndarray | None, top: int = TOP_ITEMS) -> list[dict]:
    order = np.argsort(-est.frequencies, kind="stable")[:top]
    out = []
    for i in order.tolist():
        row = {"item": i, "estimate": float(est.frequencies[i]),
               "stderr": _finite(est.stderr[i])}
        if truth_f is not None:
            row["true_frequency"] = float(truth_f[i])
        out.append(row)
    return out


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return _finite(float(x))
    return x


def _plot(est: Estimate, truth_f: np.ndarray, title: str) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(truth_f)
    shown = np.argsort(-truth_f, kind="stable")[:min(k, 100)]
    x = np.arange(len(shown))
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    ax.plot(x, truth_f[shown], "k-", lw=1.5, label="true frequency")
    err = np.where(np.isfinite(est.stderr[shown]), 2 * est.stderr[shown], 0.0)
    ax.errorbar(x, est.frequencies[shown], yerr=err, fmt=".", ms=4, elinewidth=0.6,
                color="tab:blue", label="estimate ± 2 stderr")
    ax.set_xlabel(f"items ranked by true frequency (top {len(shown)} of k = {k})")
    ax.set_ylabel("frequency")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_results(est: Estimate, stats: dict, truth: np.ndarray | None, *, config_json: str,
                  out_dir: str, extra: dict | None = None) -> dict:
    """Write ``estimates.parquet`` and ``summary.json`` (and, with ``truth``, the PNG plot) into
    ``out_dir``; return the summary. Runs as the pipeline's last step, so it works on any runner."""
    config = CollectionConfig.from_json(config_json)
    protocol = config.protocol
    k = protocol.k
    truth_f = None
    columns = {"item": np.arange(k, dtype=np.int64), "estimate": est.frequencies.astype(np.float64),
               "stderr": est.stderr.astype(np.float64)}
    fields = list(schemas.ESTIMATES_SCHEMA)
    if truth is not None:
        n_true = int(truth.sum())
        truth_f = truth / max(n_true, 1)
        columns["true_frequency"] = truth_f
        fields.append(pa.field("true_frequency", pa.float64(), nullable=False))
    table = pa.table(columns, schema=pa.schema(fields))
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    _write_bytes(f"{out_dir}/{ESTIMATES}", buf.getvalue().to_pybytes())

    config_dict = {**config.to_dict(), "fingerprint": config.fingerprint}
    summary: dict[str, Any] = {
        "protocol": protocol.protocol_id,
        "config": config_dict,
        "n_read": stats["read"],
        "n_accepted": stats["accepted"],
        "n_rejected": sum(stats["rejected"].values()),
        "rejected_by_reason": dict(sorted(stats["rejected"].items())),
        "decode_seconds": est.diagnostics.get("decode_seconds"),
        "diagnostics": est.diagnostics,
        "top_items": top_items(est, truth_f),
    }
    if truth is not None:
        n = int(truth.sum())
        summary["mse"] = float(np.mean((est.frequencies - truth_f) ** 2))
        summary.update(predicted(protocol, n, truth_f))
        summary["truth_top_items"] = [{"item": int(i), "true_frequency": float(truth_f[i]),
                                       "estimate": float(est.frequencies[i])}
                                      for i in np.argsort(-truth_f, kind="stable")[:TOP_ITEMS]]
        title = (f"{protocol.protocol_id} k={k} ε={protocol.epsilon:g} n={n}: "
                 f"MSE {summary['mse']:.3g}")
        _write_bytes(f"{out_dir}/{PLOT}", _plot(est, truth_f, title))
    summary.update(extra or {})
    summary = _jsonable(summary)
    _write_bytes(f"{out_dir}/{SUMMARY}",
                 (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    return summary


def predicted(protocol, n: int, f: np.ndarray) -> dict[str, Any]:
    """``predicted_mse(n, f)`` of the raw estimate at the true frequencies, and how it was
    obtained (None where the protocol cannot compute it, e.g. RAPPOR's dense covariance above
    its size limit)."""
    if n == 0:
        return {"predicted_mse": None, "predicted_mse_kind": "no reports"}
    mse = float(protocol.predicted_mse(n, f))
    if not np.isfinite(mse):
        return {"predicted_mse": None, "predicted_mse_kind": "not computable at this k"}
    return {"predicted_mse": mse, "predicted_mse_kind": "exact at the true frequencies"}
