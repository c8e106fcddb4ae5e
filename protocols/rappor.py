"""Full RAPPOR: Bloom filters, cohorts, permanent and instantaneous randomized response."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.sparse.linalg import lsmr

from privfreq.protocols.attacks import chunked, pick_uniform
from privfreq.protocols.base import (DENSE_LIMIT, Counts, Estimate, ReportBatch, check_int,
                                     register_protocol)
from privfreq.protocols.least_squares import LeastSquaresDecoder, LSBlock
from privfreq.protocols.postprocess import project_simplex
from privfreq.protocols.hashing import hash_to_range, item_offsets, mix64, seed_state
from privfreq.protocols.unary_encoding import flip_bits
from privfreq.protocols.wire import PackedBitsPayload

__all__ = ["RAPPOR", "RapporClient"]

# Bloom bits materialised at once in randomize/add_reports (one float64 per bit: 32 MiB).
CHUNK_ELEMENTS = 1 << 22
# output_distribution enumerates 2^bloom_bits bit vectors per cohort.
ENUMERATION_LIMIT_BITS = 12
LSMR_TOL = 1e-10
# The one-stage unbiased decoder needs C·b >= FULL_RANK_FACTOR·k: near-square Bloom systems are
# badly conditioned (k = 1024, Zipf(1.1), n = 2·10^5, ε = 4, no IRR: MSE 7.0e-3 at C·b = k,
# 4.8e-6 at 2k, 2.9e-6 at 4k; the two-stage decoder 6.4-7.2e-7 at all three).
FULL_RANK_FACTOR = 2
# Two-stage decoder (cohorts·bloom_bits < k): the Lasso penalty is LASSO_Z noise standard
# deviations of a null candidate's score X_jᵀε (see ``select_candidates``): the universal
# threshold sqrt(2 ln k) (about the max of k null scores; k·P(Z > sqrt(2 ln k)) < 0.1 for
# k = 65 536). One more sd lost a planted item at 6 standard errors to the Lasso's shrinkage.
LASSO_EXTRA_Z = 0.0
LASSO_MAX_ITER = 2000
LASSO_TOL = 1e-4


def _check_prob(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"RAPPOR: {name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"RAPPOR: {name} must be in [0, 1], got {value!r}")
    return v


@register_protocol("rappor")
@dataclass(frozen=True)
class RAPPOR(PackedBitsPayload, LeastSquaresDecoder):
    """RAPPOR (Erlingsson, Pihur, Korolova, "RAPPOR: Randomized Aggregatable Privacy-Preserving
    Ordinal Response", CCS 2014), decoded over the candidate set ``[k]``.

    Parametrisation: ``bloom_bits`` (b), ``hashes`` (h), ``cohorts`` (C), the instantaneous-RR
    probabilities ``p = P(S_i=1 | B'_i=0)`` and ``q = P(S_i=1 | B'_i=1)`` (0 <= p < q <= 1), and
    ``epsilon`` = ε∞, the privacy of the permanent randomized response (the bound that holds for any
    number of reports of one value). The PRR flip probability is derived from it:
    ``f = 2/(1 + e^{ε∞/(2h)})``, i.e. ``ε∞ = 2h·ln((1−f/2)/(f/2))``. One instantaneous report is
    ``ε1 = h·ln(q*(1−p*)/(p*(1−q*)))``-LDP with ``q* = f(p+q)/2 + (1−f)q`` and
    ``p* = f(p+q)/2 + (1−f)p`` (``epsilon_one``; ε1 = ε∞ when p = 0, q = 1, i.e. no IRR). Both
    bounds are tight when two items have disjoint h-bit Bloom sets in some cohort.

    Distribution: the client belongs to a cohort ``c`` uniform in ``[C]`` (``ReportBatch.block``,
    independent of the item). Its Bloom filter ``B`` sets bits ``H_{c,i}(x) mod b``, i < h (seeded
    SplitMix64 of ``protocols.hashing`` keyed by ``hash_seed``, c, i). PRR: each bit is 1 w.p.
    f/2, 0 w.p. f/2, ``B_i`` otherwise (memoized per (user, item): ``RapporClient``). IRR: each
    reported bit ``S_i`` is 1 w.p. q if ``B'_i = 1`` else p. ``randomize`` draws a fresh PRR per
    call, i.e. one report per user. Payload: the packed b bits (LSB first), padding bits zero.

    Estimator: with ``N_c`` reports and bit counts ``Y_{c,i}`` in cohort c,
    ``t_{c,i} = (Y_{c,i} − p*·N_c)/((1−f)(q−p))`` is unbiased for the true Bloom-bit count, and
    ``E[t_c | N] = N_c·X_c f`` with ``X_c ∈ {0,1}^{b×k}`` the cohort's Bloom matrix. ``f̂`` solves the
    row-weighted least squares ``min Σ_c ||X_c f − t_c/N_c||²·N_c`` (LSMR on the sparse system;
    unbiased when the stacked Bloom matrix has full column rank, which needs ``C·b >= k``); used
    when ``C·b >= FULL_RANK_FACTOR·k``, where that system is well conditioned. Otherwise (Bloom
    filters smaller than the domain, RAPPOR's own setting, or a near-square system) the original
    decoder's two stages are used: (1) candidate selection by a
    non-negative Lasso on the same weighted system (``select_candidates``, scikit-learn), (2) the
    least squares above restricted to the selected columns, with standard errors from
    ``covariance_diagonal`` on those columns (conditional on the selection); unselected items are
    estimated 0 with stderr NaN. Candidates are the ids [k] (``candidates`` limits them).
    Variance and standard errors (``covariance_diagonal``): exact against the population's own
    frequencies, the report noise plus the users' random split among cohorts (SPEC §2's split
    term); dense, k <= DENSE_LIMIT, else NaN.

    Attack: the MAP item (most of x's Bloom bits set in the report, ties uniform); no closed form.
    ``epsilon`` is the permanent-response bound ε∞ (one report is only ε1-LDP), so its ASR is not
    comparable with the other protocols' at equal ε.
    """

    display_name = "RAPPOR"
    comparable_asr = False
    transient = ("bloom", "design")

    k: int
    epsilon: float
    bloom_bits: int = 128
    hashes: int = 2
    cohorts: int = 16
    p: float = 0.5
    q: float = 0.75
    hash_seed: int = 0
    f: float = field(init=False, repr=False)
    p_star: float = field(init=False, repr=False)
    q_star: float = field(init=False, repr=False)
    epsilon_one: float = field(init=False, repr=False)

    def __post_init__(self):
        self.check_k_epsilon("RAPPOR")
        check_int("RAPPOR", "bloom_bits", self.bloom_bits, 1, 1 << 20)
        check_int("RAPPOR", "hashes", self.hashes, 1, self.bloom_bits)
        check_int("RAPPOR", "cohorts", self.cohorts, 1, 1 << 16)
        check_int("RAPPOR", "hash_seed", self.hash_seed, 0, 2**63 - 1)
        p, q = _check_prob("p", self.p), _check_prob("q", self.q)
        if not p < q:
            raise ValueError(f"RAPPOR: need p < q (IRR must favour the PRR bit), got p = {p}, "
                             f"q = {q}")
        self.set_support(p, q)
        f = 2.0 / (1.0 + math.exp(self.epsilon / (2 * self.hashes)))
        ps = f * (p + q) / 2 + (1 - f) * p
        qs = f * (p + q) / 2 + (1 - f) * q
        object.__setattr__(self, "f", f)
        object.__setattr__(self, "p_star", ps)
        object.__setattr__(self, "q_star", qs)
        object.__setattr__(self, "epsilon_one",
                           self.hashes * math.log(qs * (1 - ps) / (ps * (1 - qs))))

    @property
    def n_blocks(self) -> int:
        return self.cohorts

    # ----- Bloom filters -----------------------------------------------------------------------
    @cached_property
    def bloom(self) -> np.ndarray:
        """``int64[C, k, h]`` Bloom bit positions of every (cohort, item, hash)."""
        keys = seed_state(np.arange(self.cohorts * self.hashes))
        keys ^= seed_state([self.hash_seed])
        mix64(keys)
        pos = hash_to_range(keys[:, None], item_offsets(np.arange(self.k))[None, :],
                            self.bloom_bits)
        return pos.reshape(self.cohorts, self.hashes, self.k).transpose(0, 2, 1).copy()

    @cached_property
    def design(self) -> sp.csr_matrix:
        """Stacked Bloom matrix ``X ∈ {0,1}^{(C·b)×k}``: row ``c·b + i``, column x."""
        c = np.arange(self.cohorts)[:, None, None]
        rows = (c * self.bloom_bits + self.bloom).ravel()
        cols = np.broadcast_to(np.arange(self.k)[None, :, None], self.bloom.shape).ravel()
        x = sp.csr_matrix((np.ones(len(rows)), (rows, cols)),
                          shape=(self.cohorts * self.bloom_bits, self.k))
        x.sum_duplicates()
        x.data[:] = 1.0           # two hashes on one bit set it once
        return x

    def bloom_bits_of(self, cohort, items) -> np.ndarray:
        """Unpacked Bloom filters ``bool[n, b]`` of items in their cohorts."""
        n = len(items)
        bits = np.zeros((n, self.bloom_bits), dtype=bool)
        bits[np.arange(n)[:, None], self.bloom[cohort, items]] = True
        return bits

    # ----- client ------------------------------------------------------------------------------
    def permanent_response(self, cohort, items, rng) -> np.ndarray:
        """PRR ``B'`` of each (cohort, item), packed ``uint8[n, ceil(b/8)]``."""
        cohort = np.asarray(cohort, dtype=np.int64)
        n = len(items)
        out = np.empty((n, (self.bloom_bits + 7) // 8), dtype=np.uint8)
        step = max(1, CHUNK_ELEMENTS // self.bloom_bits)
        for lo in range(0, n, step):
            b = self.bloom_bits_of(cohort[lo:lo + step], items[lo:lo + step])
            u = rng.random(b.shape)
            b = np.where(u < self.f / 2, True, np.where(u < self.f, False, b))
            out[lo:lo + len(b)] = np.packbits(b, axis=1, bitorder="little")
        return out

    def instantaneous_response(self, prr: np.ndarray, rng) -> np.ndarray:
        """IRR ``S`` of packed PRRs: bit 1 w.p. q where ``B'`` is 1, else p; packed."""
        return flip_bits(prr, self.bloom_bits, self.q, self.p, rng)

    def randomize(self, items, rng):
        """One report per user: a uniform cohort, a fresh PRR and one IRR per item."""
        x = self.check_items(items)
        n = len(x)
        cohort = rng.integers(0, self.cohorts, n)
        values = self.instantaneous_response(self.permanent_response(cohort, x, rng), rng)
        return ReportBatch(cohort, np.zeros(n, np.int64), values)

    # ----- wire --------------------------------------------------------------------------------
    def information_bits(self):
        """``⌈log2 C⌉ + b``: cohort and Bloom bits."""
        return math.ceil(math.log2(self.cohorts)) + self.bloom_bits

    @property
    def packed_bits(self):
        return self.bloom_bits

    # ----- server ------------------------------------------------------------------------------
    def count_shape(self):
        return (self.cohorts, self.bloom_bits)

    def add_reports(self, acc: Counts, batch: ReportBatch) -> Counts:
        b = self.bloom_bits
        step = max(1, CHUNK_ELEMENTS // b)
        flat = acc.counts.reshape(-1)     # a view: acc.counts is contiguous int64
        for lo in range(0, len(batch), step):
            bits = np.unpackbits(batch.values[lo:lo + step], axis=1, count=b, bitorder="little")
            rows, cols = np.nonzero(bits)
            flat += np.bincount(batch.block[lo:lo + step][rows] * b + cols, minlength=flat.size)
        acc.n_block += np.bincount(batch.block, minlength=self.cohorts)
        return acc

    def _system(self, n_block, cols=None):
        """Row-scaled design ``A = diag(sqrt(N_c)) X`` (columns ``cols`` only, if given)."""
        scale = np.repeat(np.sqrt(np.asarray(n_block, dtype=np.float64)), self.bloom_bits)
        x = self.design if cols is None else self.design[:, cols]
        return sp.diags(scale) @ x, scale

    @property
    def full_rank_decoder(self) -> bool:
        """``C·b >= FULL_RANK_FACTOR·k``: the one-stage unbiased decoder is used (else Lasso
        selection, then least squares on the selected candidates)."""
        return self.cohorts * self.bloom_bits >= FULL_RANK_FACTOR * self.k

    def covariance_diagonal(self, n_block, f, cols=None) -> np.ndarray:
        """``diag Cov(f̂)`` against the population's own frequencies f, given the cohort sizes
        ``N_c`` (dense: k <= DENSE_LIMIT, else NaN; inf when some item is not identifiable).
        ``cols``: the least squares restricted to these columns (f then holds their frequencies;
        the other items are taken as absent).

        ``f̂ = M⁻¹Σ_c X_cᵀt_c``, ``M = Σ_c N_c X_cᵀX_c``. Given its item a report's bits are
        independent (PRR and IRR flip each bit on its own), so given the cohort's users
        ``Cov(t_c/N_c) = diag(σ_c)/N_c`` with ``σ_c = [p*(1−p*)(1−β_c) + q*(1−q*)β_c]/gain²``,
        ``β_c = X_c f`` in expectation. The cohorts are a uniform random split of the users
        (``B_c = N_c M⁻¹X_cᵀX_c``, ``Σ_c B_c = I``), which adds, as for MSS (SPEC §2),
        ``κ[Σ_c B_cΣ_fB_cᵀ/N_c − Σ_f/n]``, ``Σ_f = diag f − ffᵀ``, ``κ = n/(n−1)``. With
        ``U_c = M⁻¹X_cᵀ``: ``diag = Σ_c N_c[(U_c²)σ_c + κ·rowsum((U_c K_c) ⊙ U_c)] − κ(f − f²)/n``,
        ``K_c = X_c diag(f) X_cᵀ − β_cβ_cᵀ``.
        """
        width = self.k if cols is None else len(cols)
        if width > DENSE_LIMIT:
            return np.full(width, np.nan)
        nb = np.asarray(n_block, dtype=np.float64)
        n = float(nb.sum())
        kappa = n / (n - 1) if n > 1 else 1.0
        f = np.asarray(f, dtype=np.float64)
        a, _ = self._system(nb, cols)
        try:
            chol = scipy.linalg.cho_factor((a.T @ a).toarray())
        except np.linalg.LinAlgError:
            return np.full(width, np.inf)     # rank deficient: some item is not identifiable
        x = self.design if cols is None else self.design[:, cols]
        u = scipy.linalg.cho_solve(chol, x.T.toarray())               # [width, C·b]
        gain2 = ((1 - self.f) * (self.q - self.p)) ** 2
        out = -kappa * (f - f * f) / n
        b = self.bloom_bits
        for c in np.flatnonzero(nb > 0):
            xc = x[c * b:(c + 1) * b]
            uc = u[:, c * b:(c + 1) * b]
            beta = np.clip(xc @ f, 0.0, 1.0)
            sigma = (self.p_star * (1 - self.p_star) * (1 - beta)
                     + self.q_star * (1 - self.q_star) * beta) / gain2
            kc = (xc.multiply(f[None, :]) @ xc.T).toarray() - np.outer(beta, beta)
            out += nb[c] * ((uc * uc) @ sigma + kappa * np.einsum("ij,ij->i", uc @ kc, uc))
        return np.maximum(out, 0.0)

    def _rhs(self, acc: Counts):
        nb = acc.n_block.astype(np.float64)
        gain = (1 - self.f) * (self.q - self.p)
        t = (acc.counts - self.p_star * nb[:, None]) / gain            # true bit counts, unbiased
        scale = np.repeat(np.sqrt(nb), self.bloom_bits)
        with np.errstate(divide="ignore", invalid="ignore"):
            return nb, np.where(scale > 0, t.ravel() / scale, 0.0)

    def select_candidates(self, acc: Counts, candidates=None) -> np.ndarray:
        """Stage 1 of the two-stage decoder: the candidate ids with a positive coefficient in the
        non-negative Lasso ``min (1/2R)||A f − y||² + α||f||₁`` on the weighted system (R rows).

        ``α = z·σ·sqrt(h·n)/R`` with ``z = sqrt(2 ln K) + LASSO_EXTRA_Z`` (K candidates): a null
        candidate's score ``A_jᵀε`` has sd about ``σ·sqrt(h·n)`` (h Bloom bits, each in a row of
        weight ``N_c``, Σ N_c = n; σ² = p*(1−p*)/gain², the per-row noise variance of y), and
        the Lasso keeps j only when its score exceeds ``R·α``. At most ``C·b`` columns (by
        coefficient) are kept so that the second stage stays identifiable.
        """
        from sklearn.linear_model import Lasso
        cand = np.arange(self.k) if candidates is None else np.unique(np.asarray(candidates,
                                                                                 np.int64))
        nb, rhs = self._rhs(acc)
        a, _ = self._system(nb, cand)
        rows = a.shape[0]
        gain = (1 - self.f) * (self.q - self.p)
        sigma = math.sqrt(self.p_star * (1 - self.p_star)) / gain
        z = math.sqrt(2 * math.log(max(2, len(cand)))) + LASSO_EXTRA_Z
        alpha = z * sigma * math.sqrt(self.hashes * acc.n) / rows
        model = Lasso(alpha=alpha, fit_intercept=False, positive=True, max_iter=LASSO_MAX_ITER,
                      tol=LASSO_TOL, selection="cyclic")
        import warnings
        from sklearn.exceptions import ConvergenceWarning
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)   # a selection, not an estimate
            model.fit(sp.csc_matrix(a), rhs)
        coef = model.coef_
        keep = np.flatnonzero(coef > 0)
        limit = self.cohorts * self.bloom_bits
        if len(keep) > limit:
            keep = keep[np.argsort(-coef[keep], kind="stable")[:limit]]
        return np.sort(cand[keep])

    def estimate(self, acc: Counts, stderr: bool = True, candidates=None) -> Estimate:
        """Regression decode; standard errors are ``covariance_diagonal`` at the realised cohort
        sizes and the plug-in frequencies (f̂ projected onto the simplex); ``stderr=False`` skips
        them (NaN; they cost O(k³)). ``C·b < FULL_RANK_FACTOR·k`` (or ``candidates`` given): two stages, Lasso
        selection then least squares on the selected candidates (see the class docstring)."""
        n = acc.n
        if n == 0:
            return Estimate(np.zeros(self.k), np.full(self.k, np.inf), {"n": 0})
        nb, rhs = self._rhs(acc)
        if self.full_rank_decoder and candidates is None:
            a, _ = self._system(nb)
            sol = lsmr(a, rhs, atol=LSMR_TOL, btol=LSMR_TOL, maxiter=10 * self.k)
            f_hat, istop, itn = sol[0], sol[1], sol[2]
            se = (np.sqrt(self.covariance_diagonal(nb, project_simplex(f_hat))) if stderr
                  else np.full(self.k, np.nan))
            return Estimate(f_hat, se, {"n": n, "lsmr_istop": int(istop), "lsmr_iterations":
                                        int(itn), "epsilon_one": self.epsilon_one, "f": self.f})
        sel = self.select_candidates(acc, candidates)
        f_hat = np.zeros(self.k)
        se = np.full(self.k, np.nan)
        istop = itn = 0
        if len(sel):
            a, _ = self._system(nb, sel)
            sol = lsmr(a, rhs, atol=LSMR_TOL, btol=LSMR_TOL, maxiter=10 * len(sel))
            f_hat[sel], istop, itn = sol[0], sol[1], sol[2]
            if stderr:
                se[sel] = np.sqrt(self.covariance_diagonal(
                    nb, np.clip(f_hat[sel], 0, None) / max(1.0, np.clip(f_hat[sel], 0, None).sum()),
                    cols=sel))
        return Estimate(f_hat, se, {"n": n, "decoder": "lasso+least-squares",
                                    "selected": sel.tolist(), "lsmr_istop": int(istop),
                                    "lsmr_iterations": int(itn), "epsilon_one": self.epsilon_one,
                                    "f": self.f})

    def least_squares_blocks(self):
        """Cohort c: rows c·b .. c·b + b − 1 of the Bloom design, ``w_c = N_c``."""
        gain = (1 - self.f) * (self.q - self.p)
        low, high = -self.p_star / gain, (1 - self.p_star) / gain
        x = self.design.toarray()
        b = self.bloom_bits
        return [LSBlock(x[c * b:(c + 1) * b], 1.0, low, high, None, b * max(low ** 2, high ** 2))
                for c in range(self.cohorts)], 0.0

    @classmethod
    def evaluation_params(cls, k, epsilon, options):
        """The defaults (128 bits × 16 cohorts) identify only k <= 2048: the cohorts scale so that
        cohorts·bloom_bits >= k (a power of 2, as in the RAPPOR paper's deployments)."""
        return {"k": k, "epsilon": epsilon,
                "cohorts": max(16, 1 << math.ceil(math.log2(math.ceil(k / 128))))}, None

    def attack(self, batch, rng):
        """MAP: bits are independent given x with P(S_i=1) = q* on x's Bloom bits and p*
        elsewhere, so the log-likelihood is ``a·ones + b·zeros`` over x's distinct Bloom bits,
        a = log(q*/p*), b = log((1−q*)/(1−p*))."""
        bloom = self.bloom                           # [C, k, h]
        k, h = self.k, self.hashes
        qs, ps = self.q_star, self.p_star
        a, b = math.log(qs / ps), math.log((1 - qs) / (1 - ps))
        # Distinct-bit flags per (cohort, item, hash): hash i counts unless an earlier hash hit it.
        distinct = np.ones(bloom.shape, dtype=bool)
        for i in range(1, h):
            distinct[:, :, i] = ~(bloom[:, :, :i] == bloom[:, :, i:i + 1]).any(axis=2)
        n = len(batch)
        out = np.empty(n, dtype=np.int64)
        for sl in chunked(n, k * h):
            bits = np.unpackbits(batch.values[sl], axis=1, count=self.bloom_bits,
                                 bitorder="little").astype(bool)
            c = batch.block[sl]
            rows = np.arange(len(bits))[:, None, None]
            s = bits[rows, bloom[c]] & distinct[c]                    # [rows, k, h]
            ones = s.sum(axis=2)
            size = distinct[c].sum(axis=2)
            score = a * ones + b * (size - ones)
            best = np.isclose(score, score.max(axis=1, keepdims=True), rtol=0, atol=1e-9)
            out[sl] = pick_uniform(best, rng)
        return out

    def output_distribution(self, item, stage: str = "report"):
        """Exact distribution of ``(cohort, bits)`` given the item.

        ``stage="report"``: one report S (PRR then IRR), ``epsilon_one``-LDP.
        ``stage="prr"``: the permanent response B', ``epsilon``-LDP.
        """
        if self.bloom_bits > ENUMERATION_LIMIT_BITS:
            raise ValueError(f"RAPPOR: output_distribution enumerates 2^bloom_bits outputs; "
                             f"bloom_bits must be <= {ENUMERATION_LIMIT_BITS}")
        if stage == "report":
            on, off = self.q_star, self.p_star
        elif stage == "prr":
            on, off = 1 - self.f / 2, self.f / 2
        else:
            raise ValueError(f"RAPPOR: stage must be 'report' or 'prr', got {stage!r}")
        bits = np.array(list(itertools.product((0, 1), repeat=self.bloom_bits)), dtype=bool)
        out = {}
        for c in range(self.cohorts):
            inset = np.zeros(self.bloom_bits, dtype=bool)
            inset[self.bloom[c, item]] = True
            prob1 = np.where(inset, on, off)
            probs = np.where(bits, prob1, 1 - prob1).prod(axis=1) / self.cohorts
            for row, pr in zip(bits, probs):
                out[(c, tuple(row.astype(int).tolist()))] = float(pr)
        return out


class RapporClient:
    """Client-side RAPPOR with the permanent response memoized per (user id, item).

    Each user id gets a cohort once (uniform, from the injected rng) and each (user id, item) pair
    a PRR once; every call then draws fresh instantaneous responses. Repeated reports of the same
    value therefore leak at most ``protocol.epsilon`` (ε∞) in total. State lives in memory; persist
    ``cohorts`` and ``prr`` to keep the guarantee across restarts.
    """

    def __init__(self, protocol: RAPPOR, rng: np.random.Generator):
        self.protocol = protocol
        self.rng = rng
        self.cohorts: dict = {}      # user id -> cohort
        self.prr: dict = {}          # (user id, item) -> packed PRR row

    def report(self, user_ids, items) -> ReportBatch:
        """One report per (user id, item) row, PRRs drawn only for pairs never seen before."""
        proto = self.protocol
        x = proto.check_items(items)
        users = list(user_ids)
        if len(users) != len(x):
            raise ValueError(f"RapporClient: {len(users)} user ids for {len(x)} items")
        new_users = [u for u in dict.fromkeys(users) if u not in self.cohorts]
        for u, c in zip(new_users, self.rng.integers(0, proto.cohorts, len(new_users))):
            self.cohorts[u] = int(c)
        pairs = list(zip(users, x.tolist()))
        new_pairs = [pr for pr in dict.fromkeys(pairs) if pr not in self.prr]
        if new_pairs:
            coh = np.array([self.cohorts[u] for u, _ in new_pairs], dtype=np.int64)
            its = np.array([i for _, i in new_pairs], dtype=np.int64)
            for pr, row in zip(new_pairs, proto.permanent_response(coh, its, self.rng)):
                self.prr[pr] = row
        cohort = np.array([self.cohorts[u] for u in users], dtype=np.int64)
        prr = np.array([self.prr[pr] for pr in pairs], dtype=np.uint8).reshape(
            len(pairs), proto.payload_width(0))
        values = proto.instantaneous_response(prr, self.rng)
        return ReportBatch(cohort, np.zeros(len(pairs), np.int64), values)
