"""ModularSubsetSelection (MSS): the flagship protocol (SPEC §2).

Arcolezi, "Private Frequency Estimation via Residue Number Systems", AAAI 2026.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from privfreq.protocols import mss_covariance, mss_decoder, mss_design, mss_linalg
from privfreq.protocols.attacks import f_or_uniform
from privfreq.protocols.base import (Counts, Estimate, ReportBatch, check_epsilon, check_int,
                                     register_protocol)
from privfreq.protocols.least_squares import LeastSquaresDecoder, LSBlock
from privfreq.protocols.ss_sampler import check_report_memory, fill_block_subsets, fill_subsets
from privfreq.protocols.subset_selection import (SSConstants, decode_subsets, encode_subsets,
                                                 ss_constants, subset_distribution)

__all__ = ["ModularSubsetSelection", "check_moduli"]


def check_moduli(k: int, moduli) -> tuple[int, ...]:
    """Validate MSS moduli for a universe of size ``k``; ``ValueError`` names the broken rule."""
    try:
        mod = tuple(moduli)
    except TypeError:
        raise ValueError(f"MSS: moduli must be a list of integers, got {moduli!r}") from None
    if not mod:
        raise ValueError("MSS: moduli must hold at least one modulus (ell >= 1), got []")
    for m in mod:
        check_int("MSS", "each modulus", m, 2, 2**32)
    mod = tuple(int(m) for m in mod)
    for a in range(len(mod)):
        for b in range(a + 1, len(mod)):
            if math.gcd(mod[a], mod[b]) != 1:
                raise ValueError(f"MSS: moduli must be pairwise coprime; {mod[a]} and {mod[b]} "
                                 f"share the factor {math.gcd(mod[a], mod[b])}")
    if math.prod(mod) < k:
        raise ValueError(f"MSS: the product of the moduli must be >= k = {k} (CRT injectivity), "
                         f"got {math.prod(mod)}")
    if sum(mod) - len(mod) + 1 < k:
        raise ValueError(f"MSS: moduli must satisfy sum(m) - ell + 1 >= k = {k} for a design matrix "
                         f"of full column rank, got {sum(mod) - len(mod) + 1}")
    if not mss_linalg.has_full_column_rank(k, mod):
        raise ValueError(f"MSS: moduli {list(mod)} give a rank-deficient design matrix for k = {k}")
    return mod


@register_protocol("mss")
@dataclass(frozen=True)
class ModularSubsetSelection(LeastSquaresDecoder):
    """ModularSubsetSelection (Arcolezi, AAAI 2026).

    Distribution: the client draws a block ``j`` uniformly from ``[ℓ]`` (independent of x), writes
    ``r = x mod m_j`` and reports ``(j, Z)`` with Z from Subset Selection on ``[m_j]`` at the full ε:
    ``P(Z | r) ∝ e^{ε·[r∈Z]}``, ``|Z| = ω_j = max(1, rint(m_j/(e^ε+1)))``. ε-LDP, tight.

    Estimator: per block ``ĝ_j = (C_j/n_j − q_j)/(p_j − q_j)`` (unbiased for the residue-class
    sums ``A_j f``), then ``f̂ = argmin_z Σ_j w_j ||A_j z − ĝ_j||² + λ||z||²`` with
    ``w_j = n_j (p_j−q_j)²/(q_j(1−q_j))``, solved by LSMR on the row-scaled sparse system.

    Variance: against the population's own frequencies f, ``Cov(f̂) = L Σ_priv Lᵀ + Cov_split``
    (SPEC §2): the SS noise of each block, with its within-block correlations, and the users'
    random split among blocks; ``mss_covariance.covariance_diagonal``. ``(Σ_j w_j A_jᵀA_j)^{-1}`` is
    only the f = 0 privatization part.

    Native report values: ``int64[n, max ω_j]`` sorted subset, padded with -1.
    Payload of block j: the subset as sorted indices or an m_j-bit bitmap, whichever is shorter.

    Attack (SPEC §4): r uniform in Z, then x uniform in ``{x<k : x ≡ r (mod m_j)}``; exact ASR given
    f ``(1/ℓ) Σ_j p_j/ω_j · Σ_x f_x/|class_j(x)|``; SPEC's approximation
    ``(1/ℓ) Σ_j p_j/(ω_j⌈k/m_j⌉)`` is ``spec_asr``. The exact maximum-likelihood guess is uniform
    over the union of the residue classes of Z, the same only when every class of block j has the
    same size (m_j | k); SPEC's guess is kept because its closed form is the one the spec states.
    """

    display_name = "MSS"
    asr_kind = "exact"
    transient = ("design",)

    k: int
    epsilon: float
    moduli: tuple[int, ...]
    ridge: float = 0.0
    blocks: tuple[SSConstants, ...] = field(init=False, repr=False)
    offsets: np.ndarray = field(init=False, repr=False, compare=False)
    omega_max: int = field(init=False, repr=False)

    def __post_init__(self):
        check_int("MSS", "k", self.k, 2)
        object.__setattr__(self, "epsilon", check_epsilon("MSS", self.epsilon))
        object.__setattr__(self, "moduli", check_moduli(self.k, self.moduli))
        try:
            ridge = float(self.ridge)
        except (TypeError, ValueError):
            raise ValueError(f"MSS: ridge must be a number >= 0, got {self.ridge!r}") from None
        if not np.isfinite(ridge) or ridge < 0:
            raise ValueError(f"MSS: ridge must be a finite number >= 0, got {self.ridge!r}")
        object.__setattr__(self, "ridge", ridge)
        blocks = tuple(ss_constants(m, self.epsilon) for m in self.moduli)
        object.__setattr__(self, "blocks", blocks)
        object.__setattr__(self, "offsets", np.concatenate([[0], np.cumsum(self.moduli)]))
        object.__setattr__(self, "omega_max", max(b.omega for b in blocks))

    @classmethod
    def min_report_bytes(cls, k: int, epsilon: float) -> float:
        """O(1) lower bound on the mean payload bytes of any feasible moduli
        (``planner.min_payload_bytes``): what ``privfreq config`` checks before planning."""
        from privfreq.protocols.planner import min_payload_bytes
        return min_payload_bytes(k, epsilon)

    @property
    def ell(self) -> int:
        return len(self.moduli)

    @property
    def n_blocks(self) -> int:
        return self.ell

    @property
    def values_width(self):
        return self.omega_max

    # ----- client ------------------------------------------------------------------------------
    def randomize(self, items, rng):
        x = self.check_items(items)
        n = len(x)
        check_report_memory("MSS", n, self.omega_max)
        j = rng.integers(0, self.ell, n)
        if self.ell == 1:
            values = np.empty((n, self.omega_max), dtype=np.int64)
            fill_subsets(values, None, x % self.moduli[0], self.blocks[0], rng)
            return ReportBatch(j, np.zeros(n, np.int64), values)
        values = np.empty((n, self.omega_max), dtype=np.int64)
        if any(c.omega < self.omega_max for c in self.blocks):
            values.fill(-1)
        fill_block_subsets(values, x, j, self.blocks, rng)    # writes values[i, :ω_j]
        return ReportBatch(j, np.zeros(n, np.int64), values)

    # ----- wire --------------------------------------------------------------------------------
    def payload_width(self, block):
        return self.blocks[block].payload_width

    def encode_payloads(self, block, values):
        return encode_subsets(values, self.blocks[block])

    def decode_payloads(self, block, raw):
        return decode_subsets(raw, self.blocks[block], pad_to=self.omega_max)

    def information_bits(self):
        """``⌈log2 ℓ⌉ + mean_j ⌈log2 C(m_j, ω_j)⌉`` (j is uniform)."""
        return math.ceil(math.log2(self.ell)) + float(np.mean([c.information_bits
                                                                for c in self.blocks]))

    # ----- server ------------------------------------------------------------------------------
    def count_shape(self):
        return (int(self.offsets[-1]),)

    def add_reports(self, acc: Counts, batch: ReportBatch) -> Counts:
        """Counts per (block, residue). One ``bincount`` per batch and no mask of the padding:

        * all reports in one block ``j`` (what parsing and the per-block decode produce): the
          first ω_j columns are counted into the block's bins (no temporary when ω_j = ω_max);
        * mixed blocks: value ``v`` of block ``j`` goes to bin ``offsets[j] + j + 1 + v``, so the
          -1 padding lands in a bin of its own per block, dropped after the ``bincount``.

        At m ≈ 1021, ω ≈ 273 (per-block batches of ~2000 rows): 0.24-0.31 µs/report; mixed blocks
        0.47-0.51 µs/report."""
        values, block = batch.values, batch.block
        n = len(block)
        if n and block[0] == block[-1] and (block == block[0]).all():
            j = int(block[0])
            c, lo = self.blocks[j], int(self.offsets[j])
            acc.counts[lo:lo + c.m] += np.bincount(values[:, :c.omega].reshape(-1), minlength=c.m)
            acc.n_block[j] += n
            return acc
        if n:
            base = self.offsets[:-1] + np.arange(1, self.ell + 1)
            flat = values + base[block][:, None]
            hist = np.bincount(flat.reshape(-1), minlength=int(self.offsets[-1]) + self.ell)
            acc.counts += np.delete(hist, base - 1)
        acc.n_block += np.bincount(block, minlength=self.ell)
        return acc

    @cached_property
    def design(self) -> mss_design.Design:
        return mss_design.Design(self.k, self.moduli)

    def estimate(self, acc: Counts, stderr: bool = True) -> Estimate:
        """``mss_decoder.decode``; ``stderr=False`` skips the per-item standard errors (NaN)."""
        return mss_decoder.decode(self, acc, stderr=stderr)

    def block_weights(self, n_block) -> np.ndarray:
        """``w_j = n_j (p_j−q_j)²/(q_j(1−q_j))`` (0 for empty blocks)."""
        v = np.array([c.variance_n1 for c in self.blocks])
        return np.asarray(n_block, dtype=np.float64) / v

    def expected_weights(self, n: int) -> np.ndarray:
        return self.block_weights(np.full(self.ell, n / self.ell))

    def covariance_diagonal(self, n_block, f):
        """SS noise plus the users' split among blocks (``mss_covariance.covariance_diagonal``)."""
        return mss_covariance.covariance_diagonal(self.design, mss_covariance.population(self, n_block, f))

    def least_squares_blocks(self):
        """Block j: the residue-class indicator rows of ``m_j``, ``c_j = (p_j−q_j)²/(q_j(1−q_j))``."""
        items = np.arange(self.k)
        out = []
        for m, c in zip(self.moduli, self.blocks):
            a = (items[None, :] % m == np.arange(m)[:, None]).astype(np.float64)
            gap = c.p - c.q
            s_max = (c.omega * (1 - c.q) ** 2 + (c.m - c.omega) * c.q ** 2) / gap ** 2
            out.append(LSBlock(a, 1.0 / c.variance_n1, -c.q / gap, (1 - c.q) / gap, c.omega, s_max))
        return out, self.ridge

    # ----- attacker ------------------------------------------------------------------------------
    def attack(self, batch, rng):
        n, k = len(batch), self.k
        moduli = np.array(self.moduli, dtype=np.int64)
        omegas = np.array([c.omega for c in self.blocks], dtype=np.int64)
        j = batch.block
        col = np.floor(rng.random(n) * omegas[j]).astype(np.int64)
        r = batch.values[np.arange(n), col]
        m = moduli[j]
        size = (k - r + m - 1) // m              # |{x < k : x ≡ r (mod m)}| = ⌈(k − r)/m⌉
        t = np.floor(rng.random(n) * size).astype(np.int64)
        return r + t * m

    def closed_form_asr(self, f=None):
        f = f_or_uniform(self, f)
        x = np.arange(self.k)
        total = 0.0
        for c in self.blocks:
            sizes = np.bincount(x % c.m, minlength=c.m)
            total += c.p / c.omega * float(np.sum(f / sizes[x % c.m]))
        return total / self.ell

    def spec_asr(self):
        """SPEC §4's approximation ``(1/ℓ) Σ_j p_j / (ω_j ⌈k/m_j⌉)`` (data-independent)."""
        return float(np.mean([c.p / (c.omega * math.ceil(self.k / c.m)) for c in self.blocks]))

    # ----- evaluation grid -------------------------------------------------------------------------
    @classmethod
    def evaluation_params(cls, k, epsilon, options):
        """Moduli from ``options.mss_moduli`` (``K:a,b,...`` flags) for this k, else the planner
        (``planner.plan(k, ε, ell=options.mss_ell, max_mse_factor=options.mss_max_mse_factor)``,
        the shortest message whose predicted MSE is within the factor of SS), memoised in
        ``options.plan_cache``. The note records the moduli and where they came from."""
        for text in options.mss_moduli:
            head, sep, mods = text.partition(":")
            if not sep:
                raise ValueError(f"evaluate: --mss-moduli must look like K:a,b,..., got {text!r}")
            if int(head) == k:
                moduli = [int(m) for m in mods.split(",") if m.strip()]
                note = {"moduli": moduli, "source": "--mss-moduli"}
                return {"k": k, "epsilon": epsilon, "moduli": moduli}, note
        key = f"{k}:{epsilon:g}:{options.mss_ell}:{options.mss_max_mse_factor:g}"
        cache = options.plan_cache
        if key not in cache:
            import time

            from privfreq.protocols import planner
            t0 = time.perf_counter()
            c = planner.plan(k, epsilon, ell=options.mss_ell,
                             max_mse_factor=options.mss_max_mse_factor, top=1)[0]
            cache[key] = {"moduli": list(c.moduli), "bits": c.bits,
                          "mse_ratio_ss": c.mse_ratio_ss, "condition_number": c.condition_number,
                          "planner_seconds": time.perf_counter() - t0,
                          "source": f"planner.plan(k, eps, ell={options.mss_ell}, "
                                    f"max_mse_factor={options.mss_max_mse_factor:g})"}
        note = cache[key]
        return {"k": k, "epsilon": epsilon, "moduli": list(note["moduli"])}, note

    def output_distribution(self, item):
        """Exact ``P((j, Z) | item)``: ``1/ℓ · P_SS(Z | item mod m_j)``."""
        out = {}
        for b, c in enumerate(self.blocks):
            for z, pz in subset_distribution(c, item % c.m).items():
                out[(b, z)] = pz / self.ell
        return out
