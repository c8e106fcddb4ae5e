"""Protocol advisor: rank every one-shot protocol for (k, ε, n) under budgets (SPEC §10).

For each registered one-shot protocol (MSS with its planner moduli; ASS, AUE, ALH, ATHE with their
knob solved for the objective by ``protocols.tuning``; PI-RAPPOR; the seed-compressed css and
cmss, the latter on the planner's MSS moduli) the advisor predicts, without randomizing:

* ``mse``: per-item variance of the raw estimate at n reports (f = 0: ``variance(n)``; MSS: the
  planner's whole covariance at uniform f), and ``mse_n1 = n·mse``;
* ``information_bits`` and ``wire_bytes`` (mean payload bytes over blocks, the fixed wire width);
* ``asr``: closed-form attacker success rate under a uniform prior (``asr_kind`` says exact or
  approximate; PGR above DENSE_LIMIT uses an O(1) approximation instead of its O(K q t) transform; MSS and
  cmss SPEC §4's approximation);
* ``client_us`` per report and ``server_s`` for n reports (counting + one estimate without
  standard errors) from the cost model ``client = a + b·u_c`` µs and
  ``server = n·(c + d·u_s) + e + g·u_d`` µs, whose work units ``u_c, u_s, u_d`` come from
  ``cost_features`` and whose constants were fitted to measurements by benchmarks/cost_model.py
  (stored in ``protocols.cost_constants``; fit and held-out error in
  benchmarks/results/cost_model.md);
* ``privacy``: ``"pure"`` (ε-LDP against any adversary) or ``"computational"`` (seed-compressed
  reports: ε-LDP only against an adversary who cannot break the PRG).

Objectives: ``"mse"`` (least MSE, then bytes); ``"asr"`` and ``"bytes"``: among the options with
MSE <= (1+δ)·(the least feasible MSE), the least ASR or the fewest wire bytes, then the rest by
MSE (a bytes ranking without an accuracy floor would always pick GRR's 2-byte reports, whatever
their MSE). Under ``"asr"`` the refined protocols' knobs are tuned with the same δ against their
own family's best MSE. An option
that breaks a limit (``max_bytes``, ``max_server_seconds``) is listed after every feasible one with
``ruled_out`` naming the limit and by how much it is exceeded.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from privfreq.protocols import base
from privfreq.protocols.base import check_epsilon, check_int, get_protocol_class

__all__ = ["ONE_SHOT", "OBJECTIVES", "Option", "advise", "cost_features", "family_of",
           "predict_costs"]

# Registered one-shot frequency oracles the advisor ranks (longitudinal, multi-attribute and
# RAPPOR, whose decode is a regression over candidates without a closed-form variance, are not).
ONE_SHOT = ("grr", "oue", "sue", "olh", "hr", "ss", "pgr", "mss", "ass", "aue", "alh", "athe",
            "pi_rappor", "css", "cmss")
OBJECTIVES = ("mse", "asr", "bytes")
# Public randomness travels in the report's own int64 seed field: counted in the wire bytes.
SEED_BYTES = 8
# Cost-model family of each protocol: the refined ones run their parent's code.
_FAMILY = {"oue": "ue", "sue": "ue", "aue": "ue", "athe": "ue", "olh": "lh", "alh": "lh",
           "ss": "ss", "ass": "ss", "cmss": "css"}    # cmss: css's PRG expansion per block


def family_of(protocol_id: str) -> str:
    return _FAMILY.get(protocol_id, protocol_id)


# SS sampler's sort path (``ss_sampler._sort_path``), CPU ns per subset element (int16 keys;
# ``--calibrate``: k = 500..16000, ε = 2.5..4.5, within 11 %): one sort of every row, then the
# rows still holding a repeat are redrawn and re-sorted until distinct. With d =
# ``_expected_dups`` the expected re-sorts per row are Σ_j (1 − exp(−d·(ω/m)^j)) (each round
# redraws ~ω/m as many values as the last). This replaces the sampler's own
# ``SORT_NS_PER_REPEAT_ROUND·min(6, d)``, which grows with d where the cost does not (2x too high
# at k = 6000, ε = 3).
SS_SORT_NS_PER_ELEMENT = 6.3
SS_SORT_NS_PER_RESORT = 4.1


def _ss_resorts(m: int, omega: int) -> float:
    """Expected re-sorts per row of the sort path (the comment above)."""
    d, total = _ss_dups(m, omega), 0.0
    for j in range(32):
        t = -math.expm1(-d * (omega / m) ** j)
        total += t
        if t < 1e-4:
            break
    return total


def _ss_dups(m: int, omega: int) -> float:
    from privfreq.protocols import ss_sampler as s
    return s._expected_dups(m, omega)


def _ss_client_units(m: int, omega: int) -> float:
    """SS sampler ns per report: the path ``ss_sampler._use_bitmap`` picks; the bitmap path by the
    sampler's own constants, the sort path by the model above."""
    from privfreq.protocols import ss_sampler as s
    if omega <= 1:
        return 1.0
    if s._use_bitmap(m, omega):
        return m * s.BITMAP_NS_PER_POSITION + omega * s.BITMAP_NS_PER_ELEMENT
    per = SS_SORT_NS_PER_ELEMENT + SS_SORT_NS_PER_RESORT * _ss_resorts(m, omega)
    if 2 * m > np.iinfo(np.int16).max:
        per *= s.SORT_WIDE_KEY_FACTOR
    return omega * per


# Unary encoding (``protocols.unary_encoding`` / ``ue_sampler``): ns per report of each path,
# CPU time, numpy 2.4, one thread, k in 128..65536 (``benchmarks/cost_model.py --calibrate``).
# The path is the sampler's own choice (``ue_sampler.use_sparse``; "indices" reports always use
# the sparse sampler); the costs are measured here because the rewritten dense sampler
# (DENSE_FULL_STEPS full steps on every word, then the undecided ones) costs about the same per
# word whatever q, unlike ``use_sparse``'s ``lead + DENSE_STEPS`` steps.
UE_NS_PER_GAP = 11.5        # sparse_rows, per gap drawn (``_sparse_width``: mean + 6 sd + 8)
UE_NS_PER_PACKED_GAP = 3.5   # rows_to_packed (bitmap from the sparse rows), per gap
UE_NS_PER_PACKED_WORD = 1.5  # and per 32-bit word
UE_NS_PER_DENSE_WORD = 32.0  # dense_words + the item bit, per 64-bit word (~flat in q)
UE_NS_PER_COUNT_WORD = 2.9   # count_bits (carry-save), per 64-bit word of the packed row
UE_NS_PER_PAD_WORD = 3.9     # count_bits' zero-padding copy when ceil(k/8) is not a multiple of 8
UE_NS_PER_SLOT = 1.9         # count_indices, per slot (1 + cap) of an "indices" report
UE_INDEX_CHUNK_NS = 2.0      # count_indices, per column (k + 1) and chunk of INDEX_CHUNK_SLOTS


def _ue_units(proto) -> tuple[float, float]:
    """(client ns, server ns) per report of a unary-encoding protocol (constants above)."""
    from privfreq.protocols import ue_sampler as u
    k, q = proto.k, proto.q
    words = math.ceil(k / 64)
    if proto.encoding == "indices":
        client = UE_NS_PER_GAP * u._sparse_width(k, q)
        slots = 1 + proto.cap
        server = slots * (UE_NS_PER_SLOT + UE_INDEX_CHUNK_NS * (k + 1) / u.INDEX_CHUNK_SLOTS)
        return client, server
    if u.use_sparse(k, q):
        client = ((UE_NS_PER_GAP + UE_NS_PER_PACKED_GAP) * u._sparse_width(k, q)
                  + UE_NS_PER_PACKED_WORD * (k // 32 + 1))
    else:
        client = UE_NS_PER_DENSE_WORD * words
    server = words * (UE_NS_PER_COUNT_WORD + (UE_NS_PER_PAD_WORD if ((k + 7) // 8) % 8 else 0.0))
    return client, server


# numpy's ``bincount`` (SS and MSS count a batch's n·ω values in one call) costs ~1.1 ns per
# value up to ~5·10⁶ values per call and ~2.9 ns beyond ~10⁷ (this machine, numpy 2.4, random
# values in [2048]; max() over the same arrays stays ~0.3-0.5 ns; ``benchmarks/cost_model.py
# --calibrate``). Where it switches moves with the machine's state (SS at k = 6000: 1.5 and
# 2.6 ns per value at 8.6·10⁶ values in two runs), so the extra cost per value ramps up
# log-linearly from 0 at BINCOUNT_FAST_VALUES to BINCOUNT_BIG_EXTRA at BINCOUNT_SLOW_VALUES.
BINCOUNT_FAST_VALUES = 4e6
BINCOUNT_SLOW_VALUES = 1.6e7
BINCOUNT_BIG_EXTRA = 1.6


def _bincount_units(values_per_report: float, n: int | None) -> float:
    """Server units per report of one ``bincount`` over n reports' values (n None: large)."""
    if n is None:
        return values_per_report * (1.0 + BINCOUNT_BIG_EXTRA)
    total = max(1.0, n * values_per_report)
    ramp = math.log(total / BINCOUNT_FAST_VALUES) / math.log(BINCOUNT_SLOW_VALUES
                                                             / BINCOUNT_FAST_VALUES)
    return values_per_report * (1.0 + BINCOUNT_BIG_EXTRA * min(1.0, max(0.0, ramp)))


def cost_features(proto, n: int | None = None) -> tuple[float, float, float]:
    """Work units ``(u_c per report on the client, u_s per report on the server, u_d per
    estimate)`` of a protocol instance; the cost model is linear in them per family. ``n``
    (reports counted in one call; None: many) matters only where a unit's cost depends on the
    batch size (SS and MSS's ``bincount``)."""
    pid, k = proto.protocol_id, proto.k
    fam = family_of(pid)
    if fam == "grr":
        return 1.0, 1.0, k
    if fam == "ue":
        return _ue_units(proto) + (k,)
    if fam == "lh":
        return 1.0, k, k
    if fam == "hr":
        K = proto.n_hadamard
        return 1.0, 1.0, proto.blocks * K * math.log2(K)
    if fam == "ss":
        return (_ss_client_units(k, proto.ss.omega), _bincount_units(proto.ss.omega, n), k)
    if fam == "mss":
        return (float(np.mean([_ss_client_units(c.m, c.omega) for c in proto.blocks])),
                _bincount_units(float(np.mean([c.omega for c in proto.blocks])), n),
                k * proto.ell)
    if fam == "pgr":
        return proto.t, 1.0, proto.K * proto.q * proto.t
    if fam == "pi_rappor":
        return proto.t, k * proto.t, k
    if fam == "css":                     # expected trials × (one seed's expansion + a trial)
        if pid == "cmss":                # the same per block on [m_j], averaged (j is uniform)
            per = [_css_units(c.m, c.omega, proto.epsilon) for c in proto.blocks]
            return (float(np.mean([u[0] for u in per])), float(np.mean([u[1] for u in per])),
                    k * proto.ell)
        return _css_units(k, proto.omega, proto.epsilon) + (k,)
    return 1.0, 1.0, k


# Seed-compressed SS (``protocols.compressed_ss``): CPU ns, numpy 2.4, one thread, L = 17..5660
# (``benchmarks/cost_model.py --calibrate``).
# ``expand_seeds`` of one seed costs ~CSS_NS_PER_DRAW_LOG·L·log2 L (two row-wise sorts of its L
# draws) + ~110 ns; a rejection trial adds the membership test, the draws and the bookkeeping.
CSS_NS_PER_DRAW_LOG = 8.3
CSS_NS_PER_TRIAL = 210.0     # per report and trial, besides the expansion
CSS_NS_PER_EXPANSION = 110.0  # per report on the server, besides the expansion; + 1 ns per value


def _css_units(m: int, w: int, epsilon: float) -> tuple[float, float]:
    """Seed-compressed SS on [m]: (client ns, server ns) per report. The client runs
    E[trials] = Σ_{t<T} ρ^t rejection trials (ρ = 1 − accept, T = ``rejection_trials``), each
    expanding one seed into its L-draw stream (L as ``expand_seeds``); the server expands each
    report's seed once and counts its ω values. (The trial loop's ~35-50 µs per iteration, about
    min(T, ln n / −ln ρ) iterations per batch, is left out: < 10 % at n >= 5000.)"""
    from privfreq.protocols.compressed_ss import rejection_trials
    draws = w + 8 if w >= m else int(1.1 * m * math.log(m / (m - w + 0.5))) + 16
    draws = max(draws, w, 2)
    expand = CSS_NS_PER_DRAW_LOG * draws * math.log2(draws)
    trials, rho, tail = rejection_trials(m, w, epsilon)
    mean_trials = (1 - tail) / (1 - rho)
    return (mean_trials * (expand + CSS_NS_PER_TRIAL),
            expand + CSS_NS_PER_EXPANSION + w)


def predict_costs(proto, n: int, features=None) -> tuple[float, float]:
    """``(client µs per report, server seconds for n reports)``; NaN without fitted constants."""
    from privfreq.protocols.cost_constants import FIT
    fit = FIT.get(family_of(proto.protocol_id))
    if not fit:
        return math.nan, math.nan
    uc, us, ud = cost_features(proto, n) if features is None else features
    client = fit["client"][0] + fit["client"][1] * uc
    c, d, e, g = fit["server"]
    return client, (n * (c + d * us) + e + g * ud) * 1e-6


@dataclass
class Option:
    """One protocol configuration with its predicted figures."""

    protocol_id: str
    params: dict
    mse: float
    mse_n1: float
    information_bits: float
    wire_bytes: float
    asr: float
    asr_kind: str
    client_us: float
    server_s: float
    privacy: str = "pure"
    ruled_out: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def feasible(self) -> bool:
        return not self.ruled_out

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in d.items()}


def _info_bits(proto) -> float:
    if family_of(proto.protocol_id) == "ss":
        from privfreq.protocols.planner import _info_bits
        return float(_info_bits(proto.ss))
    return float(proto.information_bits())


def _asr(proto) -> tuple[float, str]:
    if proto.protocol_id == "pgr" and proto.K > base.DENSE_LIMIT:
        # O(1): x ∈ S_u w.p. s, and |S_u ∩ [k]| ≈ 1 + (cset − 1)(k − 1)/(K − 1)
        return proto.s / (1 + (proto.cset - 1) * (proto.k - 1) / (proto.K - 1)), "approx"
    if proto.protocol_id in ("mss", "cmss"):
        return proto.spec_asr(), "approx"
    return proto.closed_form_asr(), proto.asr_kind


def _option(proto, n, note="", privacy="pure", mse_n1=None, wire=None) -> Option:
    mse_n1 = float(proto.predicted_mse(1)) if mse_n1 is None else mse_n1
    wire = (float(np.mean([proto.payload_width(b) for b in range(proto.n_blocks)]))
            if wire is None else wire)
    if proto.uses_seed:
        wire += SEED_BYTES
    asr, kind = _asr(proto)
    client, server = predict_costs(proto, n)
    return Option(proto.protocol_id, proto.to_params(), mse_n1 / n, mse_n1, _info_bits(proto),
                  wire, asr, kind, client, server, privacy=privacy, note=note)


@functools.lru_cache(maxsize=64)
def _planned(k, epsilon, asr_delta, seed):
    """The planner's pick (``asr_delta`` None: least MSE; else ``plan_asr`` over the 3 best)."""
    from privfreq.protocols.planner import plan, plan_asr
    if asr_delta is None:
        return plan(k, epsilon, top=1, seed=seed)[0]
    return plan_asr(k, epsilon, delta=asr_delta, top=1, pool=3, seed=seed)[0][0]


def _mss_option(k, epsilon, n, objective, delta, max_bytes, seed):
    from privfreq.protocols.mss import ModularSubsetSelection
    from privfreq.protocols.planner import min_payload_bytes
    low = min_payload_bytes(k, epsilon)
    if max_bytes is not None and low > max_bytes:
        return Option("mss", {"k": k, "epsilon": epsilon}, math.nan, math.nan, math.nan, low,
                      math.nan, "none", math.nan, math.nan,
                      ruled_out=[f"max_bytes: every feasible moduli set needs >= {low:,.0f} bytes "
                                 f"per report, {low / max_bytes:.1f}x the limit {max_bytes:,g}"],
                      note="not planned (O(1) payload bound)")
    cand = _planned(k, epsilon, delta if objective == "asr" else None, seed)
    proto = ModularSubsetSelection(k, epsilon, cand.moduli)
    return _option(proto, n, note=f"planner moduli {list(cand.moduli)}",
                   mse_n1=cand.predicted_mse_n1, wire=cand.payload_bytes)


def _cmss_option(k, epsilon, n, objective, delta, seed):
    """Seed-compressed MSS on the planner's moduli (the same pick as MSS's): the planner's MSE
    (the fallback mixture changes p_j, q_j by ~2^-20 relative), 8 wire bytes."""
    from privfreq.protocols.compressed_mss import CompressedModularSubsetSelection
    cand = _planned(k, epsilon, delta if objective == "asr" else None, seed)
    proto = CompressedModularSubsetSelection(k, epsilon, cand.moduli)
    return _option(proto, n, note=f"planner moduli {list(cand.moduli)}",
                   mse_n1=cand.predicted_mse_n1, privacy="computational")


def advise(k: int, epsilon: float, n: int = 10**6, max_bytes: float | None = None,
           max_server_seconds: float | None = None, objective: str = "mse", delta: float = 1.0,
           protocols=None, seed: int = 0, allow_computational: bool = False) -> list[Option]:
    """Ranked options (module docstring): feasible first, by ``objective``; then the ruled out.

    ``allow_computational``: rank protocols whose privacy is computational (seed-compressed) with
    the others; by default they are listed as ruled out by "privacy: computational"."""
    k = check_int("advise", "k", k, 2, 2**31)
    epsilon = check_epsilon("advise", epsilon)
    n = check_int("advise", "n", n, 1)
    if objective not in OBJECTIVES:
        raise ValueError(f"advise: objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    for name, v in (("max_bytes", max_bytes), ("max_server_seconds", max_server_seconds)):
        if v is not None and not (isinstance(v, (int, float)) and v > 0):
            raise ValueError(f"advise: {name} must be a number > 0, got {v!r}")
    from privfreq.protocols.tuning import FAMILIES, tune
    ids = ONE_SHOT if protocols is None else tuple(protocols)
    options: list[Option] = []
    for pid in ids:
        try:
            if pid == "mss":
                opt = _mss_option(k, epsilon, n, objective, delta, max_bytes, seed)
            elif pid == "cmss":
                opt = _cmss_option(k, epsilon, n, objective, delta, seed)
            else:
                cls = get_protocol_class(pid)
                params: dict = {"k": k, "epsilon": epsilon}
                note = ""
                if pid in FAMILIES:
                    t = tune(pid, k, epsilon, "asr" if objective == "asr" else "mse",
                             delta=delta)
                    params.update(t.params)
                    why = (f"lowest ASR within (1+δ)x its best MSE, δ = {delta}"
                           if objective == "asr" else "least MSE")
                    note = f"knob {t.params} ({why})"
                if pid in ("oue", "sue", "aue", "athe"):
                    params["encoding"] = "auto"
                opt = _option(cls(**params), n, note=note,
                              privacy=getattr(cls, "privacy_kind", "pure"))
        except ValueError as err:           # outside the protocol's valid range (e.g. PGR's K)
            opt = Option(pid, {"k": k, "epsilon": epsilon}, math.nan, math.nan, math.nan,
                         math.nan, math.nan, "none", math.nan, math.nan,
                         ruled_out=[f"invalid: {err}"])
        if max_bytes is not None and opt.wire_bytes > max_bytes and not opt.ruled_out:
            opt.ruled_out.append(f"max_bytes: {opt.wire_bytes:,.0f} bytes per report, "
                                 f"{opt.wire_bytes / max_bytes:.1f}x the limit {max_bytes:,g}")
        if opt.privacy == "computational" and not allow_computational:
            opt.ruled_out.append("privacy: computational (ε-LDP only against an adversary who "
                                 "cannot break the PRG); allow with --allow-computational")
        if max_server_seconds is not None and opt.server_s > max_server_seconds:
            opt.ruled_out.append(f"max_server_seconds: {opt.server_s:,.3g} s for n = {n:,}, "
                                 f"{opt.server_s / max_server_seconds:.1f}x the limit "
                                 f"{max_server_seconds:g}")
        options.append(opt)
    ok = [o for o in options if o.feasible]
    bad = [o for o in options if not o.feasible]
    if objective == "mse":
        ok.sort(key=lambda o: (o.mse, o.wire_bytes))
    else:
        cap = (1 + delta) * min((o.mse for o in ok), default=math.inf) * (1 + 1e-12)
        within = (lambda o: o.asr) if objective == "asr" else (lambda o: o.wire_bytes)
        ok.sort(key=lambda o: (o.mse > cap, within(o) if o.mse <= cap else o.mse))
    bad.sort(key=lambda o: (o.mse if math.isfinite(o.mse) else math.inf))
    return ok + bad
