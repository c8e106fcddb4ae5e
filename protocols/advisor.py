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


def _ss_client_units(m: int, omega: int) -> float:
    """The SS sampler's own per-report cost model in ns (``ss_sampler._use_bitmap``'s two paths)."""
    from privfreq.protocols import ss_sampler as s
    if omega <= 1:
        return 1.0
    per = s.SORT_NS_PER_ELEMENT + s.SORT_NS_PER_REPEAT_ROUND * min(6.0, s._expected_dups(m, omega))
    if 2 * m > np.iinfo(np.int16).max:
        per *= s.SORT_WIDE_KEY_FACTOR
    return min(omega * per, m * s.BITMAP_NS_PER_POSITION + omega * s.BITMAP_NS_PER_ELEMENT)


def _ue_client_units(k: int, q: float) -> float:
    """The unary sampler's own cost model in ns (``ue_sampler.use_sparse``'s two paths)."""
    from privfreq.protocols import ue_sampler as u
    m = k - 1
    ones = m * q + u.SPARSE_EXTRA_SD * math.sqrt(m * q * (1 - q)) + 8
    lead = max(0, -math.floor(math.log2(q)) - 1) if q > 0 else 64
    dense = u.DENSE_NS_PER_WORD * (k / 64) * (lead + u.DENSE_STEPS)
    return min(u.SPARSE_NS_PER_ONE * ones, dense)


def cost_features(proto) -> tuple[float, float, float]:
    """Work units ``(u_c per report on the client, u_s per report on the server, u_d per
    estimate)`` of a protocol instance; the cost model is linear in them per family."""
    pid, k = proto.protocol_id, proto.k
    fam = family_of(pid)
    if fam == "grr":
        return 1.0, 1.0, k
    if fam == "ue":
        return _ue_client_units(k, proto.q), k / 8, k
    if fam == "lh":
        return 1.0, k, k
    if fam == "hr":
        K = proto.n_hadamard
        return 1.0, 1.0, proto.blocks * K * math.log2(K)
    if fam == "ss":
        return _ss_client_units(k, proto.ss.omega), proto.ss.omega, k
    if fam == "mss":
        return (float(np.mean([_ss_client_units(c.m, c.omega) for c in proto.blocks])),
                float(np.mean([c.omega for c in proto.blocks])), k * proto.ell)
    if fam == "pgr":
        return proto.t, 1.0, proto.K * proto.q * proto.t
    if fam == "pi_rappor":
        return proto.t, k * proto.t, k
    if fam == "css":                     # expected trials × the PRG's stream length per trial
        if pid == "cmss":                # the same per block on [m_j], averaged (j is uniform);
            per = [_css_units(c.m, c.omega, proto.epsilon) for c in proto.blocks]
            return (float(np.mean([u[0] for u in per])), float(np.mean([u[1] for u in per])),
                    k * proto.ell)       # css's fit extrapolated: not held-out validated
        return _css_units(k, proto.omega, proto.epsilon) + (k,)
    return 1.0, 1.0, k


def _css_units(m: int, w: int, epsilon: float) -> tuple[float, float]:
    """Seed-compressed SS on [m]: (expected trials × stream work, stream work) per report."""
    stream = w + 8 if w >= m else 1.1 * m * math.log(m / (m - w + 0.5)) + 16
    stream *= max(1.0, math.log2(stream))              # the per-row sort
    e = math.exp(epsilon)
    return m * e / (w * e + m - w) * stream, stream


def predict_costs(proto, n: int, features=None) -> tuple[float, float]:
    """``(client µs per report, server seconds for n reports)``; NaN without fitted constants."""
    from privfreq.protocols.cost_constants import FIT
    fit = FIT.get(family_of(proto.protocol_id))
    if not fit:
        return math.nan, math.nan
    uc, us, ud = cost_features(proto) if features is None else features
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
