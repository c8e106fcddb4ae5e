"""Report ingestion throughput: Avro vs Parquet input, aggregate pipeline vs a numpy floor.

    python benchmarks/ingest.py                      # n = 10^7 GRR reports (k = 1024, ε = 1)
    python benchmarks/ingest.py --n 1000000 --protocol mss   # MSS, planner's moduli at k=1024, ε=1

Writes the same reports (one ``--seed``) once as Avro and once as Parquet with ``privfreq encode``'s
writers, then measures side by side in one run, each measurement in its own subprocess (so each
peak RSS is its own, read from ``ru_maxrss`` of the child and its workers):

* ``floor``: one process, no Beam: Parquet row groups -> payload matrix -> the protocol's
  ``decode_payloads`` + ``add_reports`` (``np.bincount``) -- the least work that yields the counts;
* ``read parquet`` / ``read avro``: our readers alone (``ReportColumns`` batches, no validation);
* ``digest parquet`` / ``digest avro`` (``--digest``): the content digests of the input that
  ``aggregate`` takes before its job (``transforms.io.digest_inputs``), a share of the pipeline;
* ``pipeline parquet`` / ``pipeline avro``: ``pipelines.aggregate`` (digest, read, validate, dead letters,
  CombineFn with fanout, decode, write) on the in-process FnApiRunner with
  ``--direct_num_workers=2``, once multi-threaded and once multi-process; wall time of ``run()``
  including pipeline start-up.

Prints reports/s and the ratios pipeline/floor and Avro/Parquet; ``--markdown`` also prints the
table as Markdown. Every pass is repeated ``--repeat`` times, interleaved; the best time counts.

``--micro`` measures only the floor's protocol work, in this process on in-memory payloads: per
block, ``decode_payloads`` and then ``add_reports`` over batches of ``batch_rows / n_blocks``
rows (what the floor and the pipeline hand them), best of ``--repeat`` (at least 3) passes.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _config(protocol: str, k: int, epsilon: float):
    from privfreq.protocols.config import CollectionConfig
    if protocol == "mss":
        from privfreq.protocols.planner import best_moduli
        return CollectionConfig("mss", {"k": k, "epsilon": epsilon,
                                        "moduli": list(best_moduli(k, epsilon))})
    return CollectionConfig(protocol, {"k": k, "epsilon": epsilon})


def _rss_mb() -> float:
    """Peak RSS of this process (VmHWM: ru_maxrss would include the parent's before exec) or of
    its largest worker subprocess (ru_maxrss of children, Linux KiB), whichever is larger."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        with open("/proc/self/status") as f:
            own = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        pass
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


# ----- children -----------------------------------------------------------------------------------

def child_floor(config_json: str, path: str, batch_rows: int) -> dict:
    import pyarrow.parquet as pq
    from privfreq.protocols.base import ReportBatch
    from privfreq.protocols.config import CollectionConfig
    p = CollectionConfig.from_json(config_json).protocol
    widths = [p.payload_width(j) for j in range(p.n_blocks)]
    t0 = time.perf_counter()
    acc = p.create_accumulator()
    n = 0
    for b in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, use_threads=False,
                                               columns=["block", "seed", "payload"]):
        block = b.column("block").to_numpy().astype(np.int64)
        seed = b.column("seed").to_numpy()
        pay = b.column("payload")
        offsets = np.frombuffer(pay.buffers()[1], np.int32)[pay.offset:pay.offset + len(pay) + 1]
        data = np.frombuffer(pay.buffers()[2], np.uint8)
        for j in range(p.n_blocks):
            if p.n_blocks == 1:  # every payload has the one width: a view, no gather
                rows = slice(None)
                raw = data[offsets[0]:offsets[0] + len(block) * widths[0]].reshape(-1, widths[0])
            else:
                rows = np.flatnonzero(block == j)
                raw = np.lib.stride_tricks.sliding_window_view(data, widths[j])[offsets[rows]]
            values, _ = p.decode_payloads(j, raw)
            p.add_reports(acc, ReportBatch(block[rows], seed[rows], values))
        n += len(block)
    return {"seconds": time.perf_counter() - t0, "n": n, "counted": int(acc.n)}


def child_read(fmt: str, path: str, batch_rows: int) -> dict:
    from privfreq.schemas.avro import read_avro_range
    from privfreq.schemas.parquet import read_parquet_range
    reader = read_parquet_range if fmt == "parquet" else read_avro_range
    t0 = time.perf_counter()
    n = 0
    with open(path, "rb") as fo:
        for cols in reader(fo, path, batch_rows):
            n += len(cols)
    return {"seconds": time.perf_counter() - t0, "n": n}


def child_digest(paths: list[str]) -> dict:
    """The input digests ``aggregate`` takes before its job (``transforms.io.digest_inputs``)."""
    from privfreq.transforms.io import digest_inputs, match_inputs
    t0 = time.perf_counter()
    files = [m for p in paths for m in match_inputs(p)]
    digest_inputs(files)
    return {"seconds": time.perf_counter() - t0, "n": -1,
            "bytes": sum(m.size_in_bytes for m in files)}


def child_pipeline(config_path: str, pattern: str, out: str, mode: str) -> dict:
    import logging
    logging.getLogger().setLevel(logging.WARNING)
    from privfreq.pipelines import aggregate
    t0 = time.perf_counter()
    aggregate.run(["--config", config_path, "--input", pattern, "--output", out,
                   "--direct_num_workers=2", f"--direct_running_mode={mode}"])
    seconds = time.perf_counter() - t0
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    return {"seconds": seconds, "n": summary["n_read"], "accepted": summary["n_accepted"]}


def _child_main(argv: list[str]) -> None:
    kind, args = argv[0], json.loads(argv[1])
    out = {"floor": child_floor, "read": child_read, "pipeline": child_pipeline,
           "digest": child_digest}[kind](**args)
    out["rss_mb"] = _rss_mb()
    print("RESULT " + json.dumps(out), flush=True)


def _run_child(kind: str, **kwargs) -> dict:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", kind,
                           json.dumps(kwargs)], capture_output=True, text=True, cwd=ROOT)
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{kind} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


# ----- driver ---------------------------------------------------------------------------------------

def micro(args) -> None:
    """``decode_payloads`` and ``add_reports`` alone, per block, on in-memory payloads."""
    from privfreq.protocols.base import ReportBatch
    from privfreq.transforms.simulate import batch_rows
    config = _config(args.protocol, args.k, args.epsilon)
    p = config.protocol
    rng = np.random.default_rng(args.seed)
    items = np.minimum(rng.zipf(1.1, args.n) - 1, args.k - 1).astype(np.int64)
    batch = p.randomize(items, np.random.default_rng(7))
    rows = max(1, batch_rows(config) // p.n_blocks)
    blocks = []
    for j in range(p.n_blocks):
        sel = np.flatnonzero(batch.block == j)
        raw = p.encode_payloads(j, batch.values[sel])
        blocks.append([(raw[lo:lo + rows], batch.block[sel[lo:lo + rows]],
                        batch.seed[sel[lo:lo + rows]]) for lo in range(0, len(sel), rows)])
    del batch, items
    best = {"decode_payloads": np.inf, "add_reports": np.inf}
    for _ in range(max(3, args.repeat)):
        t_dec = t_add = 0.0
        acc = p.create_accumulator()
        for j, parts in enumerate(blocks):
            for raw, block, seed in parts:
                t0 = time.perf_counter()
                values, _ = p.decode_payloads(j, raw)
                t1 = time.perf_counter()
                p.add_reports(acc, ReportBatch(block, seed, values))
                t_add += time.perf_counter() - t1
                t_dec += t1 - t0
        assert acc.n == args.n
        best["decode_payloads"] = min(best["decode_payloads"], t_dec)
        best["add_reports"] = min(best["add_reports"], t_add)
    print(f"config: {config.protocol_id} k={args.k} eps={args.epsilon} {dict(config.params)}; "
          f"n = {args.n}, {rows} rows per block batch; best of {max(3, args.repeat)}")
    for name, sec in [*best.items(), ("total", sum(best.values()))]:
        print(f"  {name:16s} {sec:7.3f} s  {sec / args.n * 1e9:7.0f} ns/report  "
              f"{args.n / sec / 1e6:6.2f} M reports/s")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10**7, help="reports (default 10^7)")
    ap.add_argument("--protocol", default="grr", choices=["grr", "mss", "ss", "olh"])
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--epsilon", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1, help="interleaved repetitions (best counts)")
    ap.add_argument("--modes", default="multi_threading,multi_processing",
                    help="FnApiRunner running modes to measure, comma-separated")
    ap.add_argument("--workdir", default=None, help="keep the files here (default: a temp dir)")
    ap.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    ap.add_argument("--digest", action="store_true",
                    help="also time the input digests aggregate takes before its job")
    ap.add_argument("--micro", action="store_true",
                    help="only time decode_payloads + add_reports in this process (no files)")
    args = ap.parse_args(argv)
    if args.micro:
        return micro(args)

    from privfreq.pipelines.encode import report_pieces, write_avro_reports, write_parquet_reports
    from privfreq.transforms.simulate import batch_rows

    work = args.workdir or tempfile.mkdtemp(prefix="privfreq-ingest-")
    os.makedirs(work, exist_ok=True)
    config = _config(args.protocol, args.k, args.epsilon)
    config_path = os.path.join(work, "config.json")
    with open(config_path, "w") as f:
        f.write(config.to_json())
    rng = np.random.default_rng(args.seed)
    items = np.minimum(rng.zipf(1.1, args.n) - 1, args.k - 1).astype(np.int64)
    avro, parquet = os.path.join(work, "reports.avro"), os.path.join(work, "reports.parquet")
    tiny = os.path.join(work, "tiny.parquet")
    t0 = time.perf_counter()
    pieces = list(report_pieces(config, items, np.random.default_rng(7)))  # randomize once
    t_rand = time.perf_counter() - t0
    t0 = time.perf_counter()
    with open(avro, "wb") as fo:
        write_avro_reports(fo, config.fingerprint, config.protocol_id, pieces)
    t_avro = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_parquet_reports(parquet, config.fingerprint, config.protocol_id, pieces)
    t_parquet = time.perf_counter() - t0
    write_parquet_reports(tiny, config.fingerprint, config.protocol_id, report_pieces(config, items[:1000],
                                                      np.random.default_rng(7)))
    del items, pieces
    rows = batch_rows(config)
    print(f"config: {config.protocol_id} k={args.k} eps={args.epsilon} "
          f"{dict(config.params)} fingerprint {config.fingerprint}; batch_rows {rows}")
    print(f"n = {args.n}: wrote Avro {os.path.getsize(avro) / 1e6:.1f} MB in {t_avro:.1f} s, "
          f"Parquet {os.path.getsize(parquet) / 1e6:.1f} MB in {t_parquet:.1f} s "
          f"(randomizing took {t_rand:.1f} s)  ({work})")

    passes = [("floor (numpy, Parquet)", "floor", {"config_json": config.to_json(indent=None),
                                                   "path": parquet, "batch_rows": rows}),
              ("read parquet", "read", {"fmt": "parquet", "path": parquet, "batch_rows": rows}),
              ("read avro", "read", {"fmt": "avro", "path": avro, "batch_rows": rows})]
    if args.digest:
        passes += [("digest parquet", "digest", {"paths": [parquet]}),
                   ("digest avro", "digest", {"paths": [avro]})]
    for mode in [m for m in args.modes.split(",") if m]:
        short = "threads" if mode == "multi_threading" else "processes"
        for fmt, path in (("start-up", tiny), ("parquet", parquet), ("avro", avro)):
            passes.append((f"pipeline {fmt} ({short})", "pipeline",
                           {"config_path": config_path, "pattern": path,
                            "out": os.path.join(work, f"out-{fmt}-{short}"), "mode": mode}))
    best: dict[str, dict] = {}
    for _ in range(args.repeat):
        for label, kind, kw in passes:
            r = _run_child(kind, **kw)
            if kind == "digest":
                r["n"] = args.n  # reports whose file was digested
            if r["n"] != (1000 if "start-up" in label else args.n):
                raise RuntimeError(f"{label}: read {r['n']} reports, wrote {args.n}")
            if label not in best or r["seconds"] < best[label]["seconds"]:
                best[label] = r
            print(f"  {label:34s} {r['seconds']:8.2f} s {r['n'] / r['seconds'] / 1e6:8.2f} M/s "
                  f"peak RSS {r['rss_mb']:7.0f} MB", flush=True)

    rate = {k: v["n"] / v["seconds"] for k, v in best.items()}
    floor = rate["floor (numpy, Parquet)"]
    lines = ["| pass | seconds | M reports/s | / floor | peak RSS MB |", "|---|---:|---:|---:|---:|"]
    for label, _, _ in passes:
        r = best[label]
        if "start-up" in label:  # 1000 reports: the fixed cost of a pipeline run
            lines.append(f"| {label}, 1000 reports | {r['seconds']:.2f} | - | - | "
                         f"{r['rss_mb']:.0f} |")
            continue
        lines.append(f"| {label} | {r['seconds']:.2f} | {rate[label] / 1e6:.2f} | "
                     f"{rate[label] / floor:.2f} | {r['rss_mb']:.0f} |")
    if args.markdown:
        print(f"\nbest of {args.repeat}\n" + "\n".join(lines))
    print(f"\nread-only  avro / parquet = {rate['read avro'] / rate['read parquet']:.2f}")
    for mode in ("threads", "processes"):
        pq_l, av_l = f"pipeline parquet ({mode})", f"pipeline avro ({mode})"
        if pq_l not in rate:
            continue
        up = best[f"pipeline start-up ({mode})"]["seconds"]
        steady = {lab: args.n / max(best[lab]["seconds"] - up, 1e-9) for lab in (pq_l, av_l)}
        print(f"{mode:9s}  pipeline parquet / floor = {rate[pq_l] / floor:.2f} (target >= 0.5), "
              f"pipeline avro / parquet = {rate[av_l] / rate[pq_l]:.2f} (target >= 0.5); "
              f"without the {up:.2f} s start-up: {steady[pq_l] / floor:.2f} and "
              f"{steady[av_l] / steady[pq_l]:.2f}")
    if args.digest:
        for fmt in ("parquet", "avro"):
            d = best[f"digest {fmt}"]["seconds"]
            for mode in ("threads", "processes"):
                lab = f"pipeline {fmt} ({mode})"
                if lab in best:
                    print(f"digest {fmt}: {d:.3f} s = {d / best[lab]['seconds']:.1%} of {lab} "
                          f"(which includes it; goal < 10 %)")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child_main(sys.argv[2:])
    else:
        main()
