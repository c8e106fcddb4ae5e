"""Evaluate protocols over a grid (protocol × k × ε × distribution × trials): MSE, bits, time, ASR.

Each element of the Beam pipeline is one trial, so the grid spreads over any runner's workers.
Writes to ``--output DIR``:

* ``results.parquet`` / ``results.csv``: one row per cell (protocol, k, ε, distribution) with the
  mean, std and 5/50/95 % quantiles of the MSE (raw and after each post-processing option), the
  analytic MSE (``predicted_mse(n)`` at f_x = 0 and ``predicted_mse(n, f)``), the MSE on the top-10
  and top-100 true items, bits per report (information-theoretic and wire payload), client time
  per report, server aggregation / decode / solve time, and the empirical vs closed-form ASR.
* ``trials.parquet``: one row per trial.
* ``mse_vs_epsilon.png``, ``bits_vs_epsilon.png``, ``decode_time_vs_epsilon.png``,
  ``asr_vs_epsilon.png`` and ``report.md`` (``pipelines.evaluation_report``).
* ``moduli.json``: the MSS moduli used per (k, ε) and where they came from.

Local, a small grid::

    privfreq evaluate --protocols mss,ss,grr,pgr --k 1024 --epsilons 1,2,4 \\
        --distributions zipf:1.1,spike --trials 20 --n 10000 --output out/eval

The paper's full grid (Arcolezi, AAAI 2026; SPEC §5): n = 10⁴, k ∈ {1024, 22000},
ε = 0.5, 1.0, …, 5.0, 300 trials, Zipf and Spike, every paper protocol::

    privfreq evaluate --grid paper --output out/paper

(equivalent to ``--protocols mss,ss,grr,oue,sue,olh,hr,pgr --k 1024,22000
--epsilons 0.5,1,1.5,2,2.5,3,3.5,4,4.5,5 --distributions zipf:1.1,spike --trials 300 --n 10000``;
Zipf's exponent is not given by the spec, 1.1 is used). Any flag given explicitly overrides the
preset. ``--trials-for PID:K=N`` and ``--epsilons-for PID:K=E,E`` shrink expensive cells.

MSS moduli: the planner (``protocols.planner.plan(k, ε, ell=--mss-ell,
max_mse_factor=--mss-max-mse-factor)``: the shortest message whose predicted MSE is within the factor
of SS, the paper's operating point), unless ``--mss-moduli K:a,b,...`` fixes them for a k. Planner
results are cached in ``--moduli-cache`` (a JSON file) when given.

Dataflow (any runner flag passes through)::

    privfreq evaluate --grid paper --output gs://BUCKET/eval --runner DataflowRunner \\
        --project P --region R --temp_location gs://BUCKET/tmp --setup_file ./setup.py

LOLOHA's longitudinal setting (memoized protocols over rounds of evolving data, budget spent,
exact vs paper calibration): ``privfreq evaluate --grid longitudinal --output DIR``, see
``pipelines.evaluate_longitudinal`` for its flags. Several attributes per user (SPL, SMP, RS+FD,
ALLOMFREE on synthetic and real data): ``privfreq evaluate --grid multidimensional --output DIR``,
see ``pipelines.evaluate_multidim``.

Plots and the report are written by one worker at the end, to a local ``--output`` directory.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time

import apache_beam as beam

from privfreq.pipelines import common
from privfreq.pipelines.evaluation_report import render, report_only
from privfreq.protocols import get_protocol_class, protocol_ids
from privfreq.transforms.evaluation import EvaluateGrid
from privfreq.transforms.simulate import Distribution

__all__ = ["PAPER_GRID", "build_specs", "run", "write_outputs"]

PAPER_GRID = {
    "protocols": "mss,ss,grr,oue,sue,olh,hr,pgr",
    "k": "1024,22000",
    "epsilons": ",".join(f"{e / 2:g}" for e in range(1, 11)),
    "distributions": "zipf:1.1,spike",
    "trials": 300,
    "n": 10000,
}
DEFAULTS = {"protocols": "mss,ss,grr", "k": "64", "epsilons": "1,4",
            "distributions": "zipf:1.1,spike", "trials": 3, "n": 1000}


def _csv(text: str, cast) -> list:
    try:
        return [cast(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"evaluate: cannot parse the list {text!r}") from None


def _override(items: list[str], what: str, cast) -> dict[tuple[str, int], object]:
    """``PID:K=VALUE`` flags -> {(pid, k): cast(VALUE)}."""
    out = {}
    for text in items:
        head, sep, value = text.partition("=")
        pid, sep2, k = head.partition(":")
        if not sep or not sep2:
            raise ValueError(f"evaluate: {what} must look like PID:K=VALUE, got {text!r}")
        out[(pid, int(k))] = cast(value)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="privfreq evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--grid", choices=["paper", "longitudinal", "multidimensional"], default=None,
                   help="preset: the paper's full grid; 'longitudinal': LOLOHA's setting "
                        "(pipelines.evaluate_longitudinal, its own flags); 'multidimensional': "
                        "several attributes per user (pipelines.evaluate_multidim, its own flags)")
    p.add_argument("--protocols", help=f"comma-separated ids (default {DEFAULTS['protocols']})")
    p.add_argument("--k", help="comma-separated universe sizes")
    p.add_argument("--epsilons", help="comma-separated privacy budgets")
    p.add_argument("--distributions", help="comma-separated: zipf:S, spike, uniform")
    p.add_argument("--trials", type=int, help="trials per cell")
    p.add_argument("--n", type=int, help="users per trial")
    p.add_argument("--seed", type=int, default=0, help="base seed (>= 0)")
    p.add_argument("--attack-reports", type=int, default=None,
                   help="attack at most this many reports per trial (default: all)")
    p.add_argument("--trials-for", action="append", default=[], metavar="PID:K=N",
                   help="trials for one protocol at one k (repeatable; 0 skips it)")
    p.add_argument("--epsilons-for", action="append", default=[], metavar="PID:K=E,E",
                   help="restrict one protocol at one k to these ε (repeatable)")
    p.add_argument("--mss-moduli", action="append", default=[], metavar="K:a,b,...",
                   help="fixed MSS moduli for universe size K (repeatable); else the planner")
    p.add_argument("--mss-ell", type=int, default=None, help="planner: number of moduli")
    p.add_argument("--mss-max-mse-factor", type=float, default=1.3,
                   help="planner: shortest message within this MSE factor of SS (default 1.3)")
    p.add_argument("--moduli-cache", default=None, help="JSON file caching planner results")
    p.add_argument("--notes", default=None,
                   help="Markdown file appended to report.md as its Discussion section")
    p.add_argument("--report-only", action="store_true",
                   help="re-render plots and report.md from DIR/results.parquet, trials.parquet "
                        "and run_meta.json of an earlier run (no trials are run)")
    p.add_argument("--output", required=True, help="output directory (local)")
    return p


def _resolve(args) -> dict:
    base = PAPER_GRID if args.grid == "paper" else DEFAULTS
    g = {name: (getattr(args, name) if getattr(args, name) is not None else base[name])
         for name in base}
    grid = {
        "protocols": _csv(g["protocols"], str),
        "k": _csv(g["k"], int),
        "epsilons": _csv(g["epsilons"], float),
        "distributions": [str(Distribution.parse(d)) for d in _csv(g["distributions"], str)],
        "trials": int(g["trials"]),
        "n": int(g["n"]),
    }
    valid = protocol_ids()
    for pid in grid["protocols"]:
        if pid not in valid:
            raise ValueError(f"evaluate: unknown protocol {pid!r}; valid ids are {valid}")
    if grid["trials"] < 1 or grid["n"] < 1:
        raise ValueError(f"evaluate: trials and n must be >= 1, got {grid['trials']}, {grid['n']}")
    if args.seed < 0:
        raise ValueError(f"evaluate: seed must be >= 0, got {args.seed}")
    return grid


def build_specs(args, grid: dict) -> tuple[list[dict], dict]:
    """All trial specs of the grid, and the moduli table {"k:eps": {...}}."""
    trials_for = _override(args.trials_for, "--trials-for", int)
    eps_for = _override(args.epsilons_for, "--epsilons-for", lambda v: _csv(v, float))
    cache = {}
    if args.moduli_cache and os.path.exists(args.moduli_cache):
        with open(args.moduli_cache) as fh:
            cache = json.load(fh)
    options = argparse.Namespace(**vars(args), plan_cache=cache)
    specs, moduli_used = [], {}
    for pid in grid["protocols"]:
        cls = get_protocol_class(pid)
        for k in grid["k"]:
            trials = trials_for.get((pid, k), grid["trials"])
            epsilons = eps_for.get((pid, k), grid["epsilons"])
            for eps in epsilons:
                if trials <= 0:
                    continue
                params, note = cls.evaluation_params(k, eps, options)
                if note is not None:
                    moduli_used[f"{k}:{eps:g}"] = note
                for dist in grid["distributions"]:
                    for t in range(trials):
                        spec = {"protocol": pid, "params": params, "k": k, "epsilon": eps,
                                "distribution": dist, "trial": t, "n": grid["n"],
                                "seed": args.seed}
                        if args.attack_reports is not None:
                            spec["attack_reports"] = args.attack_reports
                        specs.append(spec)
    if args.moduli_cache:
        common.write_text_atomic(args.moduli_cache, json.dumps(cache, indent=1, sort_keys=True))
    return specs, moduli_used


# ----- outputs --------------------------------------------------------------------------------------
def _table(rows: list[dict]):
    """A pyarrow Table of dict rows (columns: the union of keys, in first-seen order)."""
    import pyarrow as pa
    names = list(dict.fromkeys(k for r in rows for k in r))
    return pa.table({n: [r.get(n) for r in rows] for n in names})


def write_outputs(cell_rows: list[dict], trial_rows: list[dict], out_dir: str, meta: dict) -> None:
    """results.parquet/.csv, trials.parquet, moduli.json, plots and report.md in ``out_dir``."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    os.makedirs(out_dir, exist_ok=True)
    cells = sorted(cell_rows, key=lambda c: (c["k"], c["distribution"], c["protocol"],
                                             c["epsilon"]))
    trials = sorted(trial_rows, key=lambda c: (c["k"], c["distribution"], c["protocol"],
                                               c["epsilon"], c["trial"]))
    table = _table(cells)
    pq.write_table(table, os.path.join(out_dir, "results.parquet"))
    pacsv.write_csv(table, os.path.join(out_dir, "results.csv"))
    pq.write_table(_table(trials), os.path.join(out_dir, "trials.parquet"))
    with open(os.path.join(out_dir, "moduli.json"), "w") as fh:
        json.dump(meta.get("moduli", {}), fh, indent=1, sort_keys=True)
    with open(os.path.join(out_dir, "run_meta.json"), "w") as fh:
        json.dump(meta, fh, indent=1, sort_keys=True, default=str)
    render(cells, out_dir, meta)


def run(argv=None, save_main_session=True):
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--grid", default=None)
    if pre.parse_known_args(argv)[0].grid == "longitudinal":
        from privfreq.pipelines import evaluate_longitudinal
        return evaluate_longitudinal.run(argv, save_main_session)
    if pre.parse_known_args(argv)[0].grid == "multidimensional":
        from privfreq.pipelines import evaluate_multidim
        return evaluate_multidim.run(argv, save_main_session)
    args, beam_args = _parser().parse_known_args(argv)
    notes = None
    if args.notes:
        with open(args.notes) as fh:
            notes = fh.read()
    if args.report_only:
        return report_only(args.output, notes)
    grid = _resolve(args)
    t0 = time.perf_counter()
    specs, moduli = build_specs(args, grid)
    if not specs:
        raise ValueError("evaluate: the grid is empty (every cell skipped)")
    logging.info("evaluate: %d trials in %d cells", len(specs),
                 len({(s["protocol"], s["k"], s["epsilon"], s["distribution"]) for s in specs}))
    options = common.pipeline_options(beam_args, save_main_session)
    # Staged, then each file renamed into place (files not written here, e.g. discussion.md, stay).
    with common.staged_output(args.output, keep_other_files=True) as out_dir:
        _run_grid(options, specs, out_dir, grid, moduli, notes, argv, t0)
    return args.output


def _run_grid(options, specs, out_dir, grid, moduli, notes, argv, t0) -> None:
    with beam.Pipeline(options=options) as p:
        out = p | "CreateTrials" >> beam.Create(specs) | "Evaluate" >> EvaluateGrid()
        cells = out["cells"] | "CellsToList" >> beam.combiners.ToList()
        trials = out["trials"] | "TrialsToList" >> beam.combiners.ToList()
        # One worker writes the tables, plots and report.
        _ = cells | "WriteOutputs" >> beam.Map(
            lambda c, t, od, meta: write_outputs(c, t, od, meta),
            beam.pvalue.AsSingleton(trials), out_dir,
            {"grid": grid, "moduli": moduli, "notes": notes,
             "command": "privfreq evaluate " + " ".join(
                 shlex.quote(a) for a in (sys.argv[2:] if argv is None else argv))})
    # Append the wall time to the report (known only now).
    report = os.path.join(out_dir, "report.md")
    if os.path.exists(report):
        with open(report) as fh:
            text = fh.read()
        wall = f"{time.perf_counter() - t0:.0f}"
        text = text.replace("WALL_SECONDS", wall)
        with open(report, "w") as fh:
            fh.write(text)
        meta_path = os.path.join(out_dir, "run_meta.json")
        with open(meta_path) as fh:
            meta = json.load(fh)
        meta["wall_seconds"] = wall
        with open(meta_path, "w") as fh:
            json.dump(meta, fh, indent=1, sort_keys=True)


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
