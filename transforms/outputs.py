"""Job outputs: ``estimates.parquet``, ``summary.json`` and ``estimates.png`` of one estimate,
written into a staged directory that is then published whole, on any Beam filesystem.

**Atomicity.** Single files (:func:`write_bytes_atomic`): a hidden temporary sibling, then one
rename; locally ``schemas.files.replaced_atomically`` (``os.replace``). Directories
(:func:`staging_dir` + :func:`commit_output`): locally one directory rename (readers see the old or
the new complete output, never a half-written one); object stores (``gs://`` ...) have no
directory rename, so there the files are renamed one by one into place.

**summary.json** holds the keys of :data:`SUMMARY_KEYS` in every job (``aggregate``, ``simulate``,
each streaming window pane); ``simulate`` adds :data:`TRUTH_KEYS`, a streaming pane adds
:data:`WINDOW_KEYS`, a multi-attribute collection :data:`MULTI_ATTRIBUTE_KEYS`, a discovery
protocol (PEM) :data:`DISCOVERY_KEYS`. Non-finite numbers are written as ``null``.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import uuid
import warnings
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from privfreq import schemas
from privfreq.protocols.base import Estimate
from privfreq.protocols.config import CollectionConfig
from privfreq.schemas.files import replaced_atomically

__all__ = ["DEAD_LETTERS", "DISCOVERY_KEYS", "ESTIMATES", "MULTI_ATTRIBUTE_KEYS", "PLOT",
           "ROUNDS_PLOT", "ROUND_KEYS", "SUMMARY", "SUMMARY_KEYS", "TOP_ITEMS", "TRUTH_KEYS",
           "WINDOW_KEYS", "commit_files", "commit_output", "discard_output", "item_columns",
           "staging_dir", "truth_frequencies", "write_bytes_atomic", "write_results",
           "write_text_atomic"]

ESTIMATES = "estimates.parquet"
SUMMARY = "summary.json"
PLOT = "estimates.png"
ROUNDS_PLOT = "rounds.png"
ROUNDS_PLOT_ITEMS = 8  # items (largest pooled estimate) drawn across rounds in rounds.png
DEAD_LETTERS = "dead_letters"
TOP_ITEMS = 10        # rows of top_items in summary.json
PLOT_ITEMS = 50       # items shown in estimates.png
Z95 = 1.959963984540054  # two-sided 95 % normal quantile: intervals estimate ± Z95 · stderr

SUMMARY_KEYS = {
    "protocol": "protocol id of the collection config",
    "config": "the collection config (protocol, params, schema_version) and its fingerprint",
    "n_read": "reports read: decoded records plus the reports that unreadable file regions "
              "declare (a region declaring no count: 1)",
    "n_accepted": "reports that passed validation and were counted",
    "n_rejected": "reports rejected (n_accepted + n_rejected = n_read)",
    "rejected_by_reason": "{reason name: reports} of the rejected",
    "unreadable_regions": "{reason name: file regions} that could not be decoded (each one dead "
                          "letter with its raw bytes)",
    "inputs": "null, or the input files: n_files, n_bytes, digest_seconds, duplicates (groups of "
              "identical files), skipped_seen, skipped_duplicates",
    "decode_seconds": "wall time of decoding the merged counts into the estimate",
    "diagnostics": "the protocol's decoder diagnostics (solver, iterations, ...)",
    "top_items": f"the {TOP_ITEMS} items of highest estimate: item, estimate, stderr (null where "
                 "unknown), name (a named domain); simulate adds true_frequency",
    "totals": "null, or with --totals-in/--totals-out: n_reports_total, n_reports_prior, "
              "n_block_total of the merged counts",
}
TRUTH_KEYS = {
    "truth": "simulate's true items: n, distribution, seed",
    "mse": "mean over items of (estimate - true frequency)^2",
    "predicted_mse": "the protocol's predicted MSE at the true frequencies (null if not "
                     "computable)",
    "predicted_mse_kind": "how predicted_mse was obtained",
    "truth_top_items": f"the {TOP_ITEMS} items of highest true frequency: item, "
                       "true_frequency, estimate",
}
ROUND_KEYS = {
    "rounds": "reports with a round (report.avsc's round) present: one entry per round in "
              "increasing order: round, n (reports counted), top_items; the top-level estimate "
              "pools every report of the run",
}
DISCOVERY_KEYS = {
    "discovered": "discovery protocols (PEM): top (heavy hitters listed, largest estimate first, "
                  "in estimates.parquet with 95 % intervals lower/upper), levels (per prefix "
                  "level: group, prefix_bits, candidates, n_reports); simulate adds true_top and "
                  "precision (= recall) of the listed items against the true top items",
}
MULTI_ATTRIBUTE_KEYS = {
    "tuple_epsilon": "multi-attribute protocols: the exact ε between arbitrary tuples (RS+FD: "
                     "ε′ = ln(d(e^ε−1)+1), above its per-attribute ε)",
    "attributes": "multi-attribute protocols: per attribute name, k, n (reports that carry it), "
                  "inner protocol, top_items; simulate adds mse and predicted_mse (SMP/ALLOMFREE: "
                  "with the split term)",
}
WINDOW_KEYS = {
    "window": "start, end (s since the epoch), start_utc, end_utc, pane_index, timing, run_id, "
              "n_reports_earlier_runs (carried over from the latest pane of earlier runs)",
    "n_reports_in_window": "reports counted in the window so far (panes accumulate, also across "
                           "restarts)",
    "n_block": "reports per block in the window",
}


# ----- files and directories, any Beam filesystem -------------------------------------------------
def _is_local(path: str) -> bool:
    return "://" not in path


def _write_bytes(path: str, data: bytes) -> None:
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write ``path`` whole or not at all: a hidden temporary sibling, then a rename (an existing
    ``path`` is replaced). For single files written outside a staged directory."""
    if _is_local(path):
        with replaced_atomically(path) as tmp, open(tmp, "wb") as f:
            f.write(data)
        return
    head, _, name = path.rstrip("/").rpartition("/")
    tmp = f"{head}/.{name}.tmp-{uuid.uuid4().hex[:12]}"
    _write_bytes(tmp, data)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def write_text_atomic(path: str, text: str) -> None:
    """:func:`write_bytes_atomic` of UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"))


def staging_dir(final: str, hidden: bool = False) -> str:
    """A fresh sibling directory of ``final`` to write into before :func:`commit_output`
    (``hidden``: its name starts with a dot, e.g. beside directories a watcher lists)."""
    head, _, name = final.rstrip("/").rpartition("/")
    tmp_name = f"{'.' if hidden else ''}{name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp = f"{head}/{tmp_name}" if head else tmp_name
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
        os.makedirs(os.path.dirname(os.path.abspath(final)), exist_ok=True)
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
    FileSystems.rename(src, [final + p[len(tmp):] for p in src])
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


def discard_output(tmp: str) -> None:
    """Remove a staging directory (best effort: it is never published either way)."""
    if _is_local(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        with contextlib.suppress(Exception):
            FileSystems.delete([tmp])


# ----- results ------------------------------------------------------------------------------------
def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return _finite(float(x))
    return x


def top_items(est: Estimate, truth_f: np.ndarray | None, top: int = TOP_ITEMS,
              part: slice = slice(None), names: list[str] | None = None) -> list[dict]:
    """The ``top`` items of highest estimate (within ``part``: one attribute's items, numbered
    from 0 within it), with their ``names`` when given; ``truth_f`` and ``names`` are indexed
    like ``est.frequencies`` (a discovery's listed items: ``est.items`` gives their ids)."""
    f = est.frequencies[part]
    order = np.argsort(-f, kind="stable")[:top]
    out = []
    for i in order.tolist():
        item = i if est.items is None else int(est.items[i])
        row = {"item": item, "estimate": float(f[i]), "stderr": _finite(est.stderr[part][i])}
        if names is not None:
            row["name"] = names[i]
        if truth_f is not None:
            row["true_frequency"] = float(truth_f[part][i])
        out.append(row)
    return out


def item_columns(protocol) -> dict[str, np.ndarray]:
    """``item`` (int64[k]) of every estimated item, and for a multi-attribute protocol the
    ``attribute`` name of each (items then numbered within their attribute)."""
    if not getattr(protocol, "multi_attribute", False):
        return {"item": np.arange(protocol.k, dtype=np.int64)}
    names = np.array(protocol.attributes, dtype=object)
    return {"attribute": names[protocol.attribute_of()],
            "item": protocol.local_item().astype(np.int64)}


def truth_frequencies(protocol, truth: np.ndarray) -> tuple[np.ndarray, int]:
    """(true frequencies, users) from true item counts; a multi-attribute protocol's counts are
    per attribute, each summing to the users."""
    if not getattr(protocol, "multi_attribute", False):
        return truth / max(int(truth.sum()), 1), int(truth.sum())
    n = int(truth[protocol.attribute_slice(0)].sum())
    return truth / max(n, 1), n


def _tick(name: str) -> str:
    return name if len(name) <= 24 else name[:23] + "…"


def _panel(ax, est: Estimate, truth_f, part: slice, title: str, names=None) -> None:
    f = est.frequencies[part]
    se = est.stderr[part]
    tf = None if truth_f is None else truth_f[part]
    k = len(f)
    rank_by = tf if tf is not None else f
    shown = np.argsort(-rank_by, kind="stable")[:min(k, PLOT_ITEMS)]
    x = np.arange(len(shown))
    if tf is not None:
        ax.plot(x, tf[shown], "k-", lw=1.5, label="true frequency")
    err = np.where(np.isfinite(se[shown]), Z95 * se[shown], 0.0)
    ax.errorbar(x, f[shown], yerr=err, fmt=".", ms=4, elinewidth=0.6,
                color="tab:blue", label="estimate, 95 % interval")
    labels = [str(i) if names is None else _tick(names[i]) for i in shown.tolist()]
    ax.set_xticks(x, labels, rotation=90, fontsize=6)
    ranked = "true frequency" if tf is not None else "estimate"
    ax.set_xlabel(f"{'item' if names is None else 'name'} (top {len(shown)} of k = {k} by "
                  f"{ranked})")
    ax.set_ylabel("frequency")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def _plot(est: Estimate, truth_f: np.ndarray | None, title: str, protocol=None,
          names: list[str] | None = None) -> bytes:
    """PNG: the top items (by true frequency when known, else by estimate) with 95 % intervals;
    a multi-attribute protocol gets one panel per attribute."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if getattr(protocol, "multi_attribute", False):
        parts = [(protocol.attribute_slice(j),
                  f"{protocol.attributes[j]} (k = {protocol.domains[j]})")
                 for j in range(protocol.d)]
    else:
        parts = [(slice(None), title)]
    fig, axes = plt.subplots(len(parts), 1, figsize=(9, 4.5 if len(parts) == 1 else 3.2 * len(parts)),
                             dpi=100, squeeze=False)
    buf = io.BytesIO()
    with warnings.catch_warnings():  # names may hold emoji the plot font lacks: drawn as boxes
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        for ax, (part, name) in zip(axes[:, 0], parts):
            _panel(ax, est, truth_f, part, name, names)
        if len(parts) > 1:
            fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def plot_rounds(rounds: list[tuple[int, Estimate]], pooled: Estimate, title: str,
                truth: dict[int, np.ndarray] | None = None) -> bytes:
    """PNG: estimates of the items of largest pooled estimate across rounds, 95 % intervals
    shaded (``truth``: per round the true frequencies, drawn dashed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = np.argsort(-pooled.frequencies, kind="stable")[:ROUNDS_PLOT_ITEMS]
    r = np.array([x for x, _ in rounds])
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    for c, item in enumerate(shown.tolist()):
        color = f"C{c % 10}"
        f = np.array([e.frequencies[item] for _, e in rounds])
        se = np.array([e.stderr[item] for _, e in rounds])
        se = np.where(np.isfinite(se), se, 0.0)
        ax.plot(r, f, "o-", ms=3, lw=1, color=color, label=f"item {item}")
        ax.fill_between(r, f - Z95 * se, f + Z95 * se, color=color, alpha=0.15, lw=0)
        if truth is not None:
            ax.plot(r, [truth[x][item] for x in r.tolist()], "--", lw=0.8, color=color)
    ax.set_xlabel("round")
    ax.set_ylabel("frequency (95 % interval shaded" + ("; truth dashed)" if truth else ")"))
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


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


# estimates.parquet columns, in this order when present (the first three always;
# schemas.ESTIMATES_SCHEMA holds item, estimate, stderr).
_ESTIMATE_FIELDS = {
    "attribute": pa.field("attribute", pa.string(), nullable=False),   # multi-attribute
    **{f.name: f for f in schemas.ESTIMATES_SCHEMA if f.name == "item"},
    "name": pa.field("name", pa.string(), nullable=False),             # a named domain
    **{f.name: f for f in schemas.ESTIMATES_SCHEMA if f.name != "item"},
    "lower": pa.field("lower", pa.float64(), nullable=False),          # a discovery's 95 %
    "upper": pa.field("upper", pa.float64(), nullable=False),          # interval
    "true_frequency": pa.field("true_frequency", pa.float64(), nullable=True),
    "round": pa.field("round", pa.int64(), nullable=True),
}


def _estimate_rows(protocol, est: Estimate, names, truth_f) -> dict[str, np.ndarray]:
    """The estimates.parquet columns of one estimate: every item of ``[0, k)`` (multi-attribute:
    with the attribute, items numbered within it), or a discovery's listed items with their
    95 % intervals. ``truth_f``: true frequencies of all k items, NaN, or None (no column)."""
    if est.items is None:
        cols = dict(item_columns(protocol))
        ids = np.arange(protocol.k)
    else:
        ids = np.asarray(est.items, dtype=np.int64)
        cols = {"item": ids}
    if names is not None:
        cols["name"] = np.array(names, dtype=object)[ids]
    cols["estimate"] = est.frequencies.astype(np.float64)
    cols["stderr"] = est.stderr.astype(np.float64)
    if est.items is not None:
        cols["lower"] = cols["estimate"] - Z95 * cols["stderr"]
        cols["upper"] = cols["estimate"] + Z95 * cols["stderr"]
    if truth_f is not None:
        cols["true_frequency"] = (np.full(len(ids), np.nan) if np.isscalar(truth_f)
                                  else np.asarray(truth_f, np.float64)[ids])
    return {c: cols[c] for c in _ESTIMATE_FIELDS if c in cols}


def _attribute_info(protocol, est: Estimate) -> list[dict]:
    """Per attribute: name, k, n and inner id (from the estimate's diagnostics when present)."""
    diag = est.diagnostics.get("attributes") or []
    out = []
    for j in range(protocol.d):
        info = diag[j] if j < len(diag) else {}
        out.append({"attribute": protocol.attributes[j], "k": protocol.domains[j],
                    "n": info.get("n"), "inner": protocol.inner_protocols[j].protocol_id})
    return out


def write_results(est: Estimate, stats: dict, *, config_json: str, out_dir: str,
                  truth: np.ndarray | None = None, truth_info: dict | None = None,
                  totals: dict | None = None, window: dict | None = None,
                  inputs: dict | None = None, plot: bool = True,
                  rounds: list[tuple[int, Estimate, int]] | None = None,
                  names: list[str] | None = None) -> dict:
    """Write ``estimates.parquet``, ``summary.json`` and (``plot``) ``estimates.png`` into
    ``out_dir``; return the summary (keys: module docstring). ``truth``: the true item counts
    (simulate); ``window``: the :data:`WINDOW_KEYS` of a streaming pane; ``rounds``: ``(round,
    estimate, n)`` of each round present (then ``estimates.parquet`` gains a nullable ``round``
    column: the pooled rows have null, each round its k rows; ``summary.json`` gains
    :data:`ROUND_KEYS`; ``rounds.png`` is written). ``names``: the label of every item (a
    config's named domain): ``estimates.parquet`` gains a ``name`` column, top items and the
    figure carry names. Runs as a pipeline's last step, so it works on any runner."""
    config = CollectionConfig.from_json(config_json)
    protocol = config.protocol
    multi = getattr(protocol, "multi_attribute", False)
    k = protocol.k
    if names is not None and len(names) != k:
        raise ValueError(f"write_results: {len(names)} names for k = {k} items")
    truth_f = None
    if truth is not None:
        truth_f, n_users = truth_frequencies(protocol, truth)
    rounds = sorted(rounds or [], key=lambda t: t[0])
    parts = [_estimate_rows(protocol, est, names, truth_f)]
    for r, e, _ in rounds:
        part = _estimate_rows(protocol, e, names, None if truth_f is None else np.nan)
        part["round"] = np.full(len(e.frequencies), r, np.int64)
        parts.append(part)
    if rounds:
        parts[0]["round"] = np.full(len(est.frequencies), -1, np.int64)
    table_cols = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
    fields = [_ESTIMATE_FIELDS[c] for c in table_cols]
    if rounds:
        table_cols["round"] = pa.array(table_cols["round"], mask=table_cols["round"] < 0)
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table(table_cols, schema=pa.schema(fields)), buf)
    _write_bytes(f"{out_dir}/{ESTIMATES}", buf.getvalue().to_pybytes())

    summary: dict[str, Any] = {
        "protocol": protocol.protocol_id,
        "config": {**config.to_dict(), "fingerprint": config.fingerprint},
        "n_read": stats["read"],
        "n_accepted": stats["accepted"],
        "n_rejected": sum(stats["rejected"].values()),
        "rejected_by_reason": dict(sorted(stats["rejected"].items())),
        "unreadable_regions": dict(sorted(stats.get("regions", {}).items())),
        "inputs": inputs,
        "decode_seconds": est.diagnostics.get("decode_seconds"),
        "diagnostics": est.diagnostics,
        "top_items": None,
        "totals": totals,
    }
    # What the estimate lists: every item, or a discovery's heavy hitters (ids in est.items).
    ids = None if est.items is None else np.asarray(est.items, dtype=np.int64)
    shown_truth = truth_f if truth_f is None or ids is None else truth_f[ids]
    shown_names = names if ids is None or names is None else [names[i] for i in ids]
    summary["top_items"] = top_items(est, shown_truth, names=shown_names)
    if ids is not None:
        summary["discovered"] = {"top": len(ids), "levels": est.diagnostics.get("levels")}
    title = f"{protocol.protocol_id} k={k} ε={protocol.epsilon:g}: {stats['accepted']} reports"
    if multi:
        summary["tuple_epsilon"] = protocol.tuple_epsilon
        summary["attributes"] = [
            {**{key: info[key] for key in ("attribute", "k", "n", "inner")},
             "top_items": top_items(est, truth_f, part=protocol.attribute_slice(j))}
            for j, info in enumerate(_attribute_info(protocol, est))]
        title = (f"{protocol.protocol_id} ε={protocol.epsilon:g} (tuple "
                 f"{protocol.tuple_epsilon:.3g}): {stats['accepted']} reports")
    if truth is not None:
        n = n_users
        summary["truth"] = truth_info or {}
        summary["mse"] = float(np.mean((est.frequencies - shown_truth) ** 2))
        summary.update(predicted(protocol, n, truth_f) if ids is None else
                       {"predicted_mse": float(np.mean(protocol.variance(n, shown_truth))),
                        "predicted_mse_kind": "exact at the true frequencies of the listed items"})
        listed = {} if ids is None else {int(x): j for j, x in enumerate(ids)}
        summary["truth_top_items"] = [
            {"item": int(i), "true_frequency": float(truth_f[i]),
             "estimate": (float(est.frequencies[i]) if ids is None else
                          (float(est.frequencies[listed[i]]) if i in listed else None)),
             **({} if names is None else {"name": names[i]})}
            for i in np.argsort(-truth_f, kind="stable")[:TOP_ITEMS]]
        if ids is not None:   # precision = recall of the top-N against the true top-N
            true_top = np.argsort(-truth_f, kind="stable")[:len(ids)]
            summary["discovered"]["true_top"] = true_top
            summary["discovered"]["precision"] = float(np.isin(ids, true_top).mean())
        title += f", MSE {summary['mse']:.3g}"
        if multi:
            pred = protocol.attribute_mse(n, truth_f) if n else [None] * protocol.d
            for j, entry in enumerate(summary["attributes"]):
                sl = protocol.attribute_slice(j)
                entry["mse"] = float(np.mean((est.frequencies[sl] - truth_f[sl]) ** 2))
                entry["predicted_mse"] = None if pred[j] is None else float(pred[j])
    if window is not None:
        summary.update(window)
    if rounds:
        summary["rounds"] = [{"round": r, "n": int(n), "top_items": top_items(e, None)}
                             for r, e, n in rounds]
    if plot:
        labels = shown_names if ids is None or names is not None else [str(i) for i in ids]
        _write_bytes(f"{out_dir}/{PLOT}", _plot(est, shown_truth, title, protocol, labels))
        if rounds:
            _write_bytes(f"{out_dir}/{ROUNDS_PLOT}", plot_rounds(
                [(r, e) for r, e, _ in rounds], est,
                f"{protocol.protocol_id} k={k}: {len(rounds)} rounds"))
    summary = _jsonable(summary)
    _write_bytes(f"{out_dir}/{SUMMARY}",
                 (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    return summary
