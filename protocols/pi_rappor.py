"""PI-RAPPOR: the private-coin, pairwise-independent compact RAPPOR (SPEC §10).

Feldman & Talwar, "Lossless Compression of Efficient Private Local Randomizers", ICML 2021
(reference: oracles/pi_rappor.cc of the PGR code).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from privfreq.protocols.attacks import mask_attack, mask_attack_asr
from privfreq.protocols.base import Counts, PureSupport, ReportBatch, register_protocol, set_fields
from privfreq.protocols.wire import decode_indices, encode_indices, index_width

__all__ = ["PIRappor", "largest_prime_at_most"]

# (report, item) pairs per chunk of the Θ(n·k) support scan (int64 temporaries: 16 MiB).
CHUNK_ELEMENTS = 1 << 21
ENUMERATION_LIMIT = 1 << 12     # output_distribution: at most this many outputs q^(t+1)


def largest_prime_at_most(x: float) -> int:
    n = int(math.floor(x))
    while n >= 2:
        if all(n % d for d in range(2, int(n ** 0.5) + 1)):
            return n
        n -= 1
    return 0


@register_protocol("pi_rappor")
@dataclass(frozen=True)
class PIRappor(PureSupport):
    """PI-RAPPOR (Feldman & Talwar 2021).

    Distribution: q the largest prime <= e^ε + 1 (needs q >= 3, i.e. ε >= ln 2),
    ``t = ⌈log_q(k+1)⌉``, ``v_x`` the t base-q digits of x+1 (nonzero). The client draws u uniform
    in F_q^t and sends (u, r) with ``r = q−1−⟨u,v_x⟩`` w.p. ½, else r uniform on the other q−1
    values. A report supports x′ iff ``⟨u, v_x′⟩ + r ≡ q−1 (mod q)``: w.p. ``p = ½`` for the
    user's x and ``1/q`` for any other item (⟨u, v_x′ − v_x⟩ is uniform). Real privacy loss
    ``ln(q−1) <= ε`` (exact: P(u, r | x) is ½/q^t or ½/((q−1)q^t)).
    Estimator ``f̂ = (C/n − 1/q)/(½ − 1/q)``; variance at f = 0 ``(1/q)(1−1/q)/(n(½−1/q)²)``.
    Message (u, r): t+1 digits in [q], ``(t+1)·log2 q`` bits; wire: t+1 little-endian indices.
    Server: Θ(n·k·t) support scan in chunks (as OLH's Θ(n·k)). Attack: a uniform supported item
    (uniform over [k] if none); ASR ≈ ``½·q(1−(1−1/q)^k)/k + ½(1−1/q)^{k−1}/k`` treating the
    pairwise-independent supports as independent (approximate).
    """

    display_name = "PI-RAPPOR"
    asr_kind = "approx"
    prime: int = field(init=False, repr=False)
    t: int = field(init=False, repr=False)

    def __post_init__(self):
        self.check_k_epsilon("PIRappor", k_max=2**31)
        if self.epsilon > 20:
            raise ValueError(f"PIRappor: epsilon must be <= 20, got {self.epsilon}")
        prime = largest_prime_at_most(math.exp(self.epsilon) + 1)
        if prime < 3:
            raise ValueError(f"PIRappor: epsilon must be >= ln 2 = {math.log(2):.4f} (the largest "
                             f"prime <= e^ε + 1 must be >= 3), got {self.epsilon}")
        t = 1
        while prime ** t < self.k + 1:
            t += 1
        set_fields(self, prime=prime, t=t)
        self.set_support(0.5, 1.0 / prime)

    @property
    def real_epsilon(self) -> float:
        return math.log(self.prime - 1)

    def digits(self, x) -> np.ndarray:
        """``int64[n, t]`` base-q digits of x+1 (least significant first)."""
        v = np.asarray(x, dtype=np.int64) + 1
        return (v[:, None] // self.prime ** np.arange(self.t)) % self.prime

    @property
    def values_width(self):
        return self.t + 1

    def randomize(self, items, rng):
        x = self.check_items(items)
        n, q = len(x), self.prime
        u = rng.integers(0, q, (n, self.t))
        target = (q - 1 - (u * self.digits(x)).sum(axis=1)) % q
        other = rng.integers(1, q, n)              # a uniform nonzero shift
        r = np.where(rng.random(n) < 0.5, target, (target + other) % q)
        return ReportBatch(np.zeros(n, np.int64), np.zeros(n, np.int64),
                           np.concatenate([u, r[:, None]], axis=1))

    def payload_width(self, block):
        return (self.t + 1) * index_width(self.prime)

    def encode_payloads(self, block, values):
        return encode_indices(values, self.prime)

    def decode_payloads(self, block, raw):
        return decode_indices(raw, self.prime, self.t + 1, distinct=False)

    def information_bits(self):
        return (self.t + 1) * math.log2(self.prime)

    def count_shape(self):
        return (self.k,)

    def _support(self, values, items) -> np.ndarray:
        """bool[len(values), len(items)]: ``⟨u, v_x⟩ + r ≡ q−1``."""
        dots = values[:, :self.t] @ self.digits(items).T
        return (dots + values[:, self.t:]) % self.prime == self.prime - 1

    def add_reports(self, acc: Counts, batch: ReportBatch) -> Counts:
        items = np.arange(self.k)
        step = max(1, CHUNK_ELEMENTS // self.k)
        for lo in range(0, len(batch), step):
            acc.counts += self._support(batch.values[lo:lo + step], items).sum(axis=0)
        acc.n_block[0] += len(batch)
        return acc

    def attack(self, batch, rng):
        items = np.arange(self.k)
        return mask_attack(self, batch, rng, lambda sl: self._support(batch.values[sl], items))

    def closed_form_asr(self, f=None):
        return float(mask_attack_asr(self.k, 0.5, self.q))

    def diagnostics(self):
        return {"real_epsilon": self.real_epsilon, "prime": self.prime, "t": self.t}

    def output_distribution(self, item):
        """Exact ``P((u, r) | item)`` over all ``q^(t+1)`` outputs (small q^t only)."""
        q, t = self.prime, self.t
        if q ** (t + 1) > ENUMERATION_LIMIT:
            raise ValueError(f"PIRappor: output_distribution enumerates q^(t+1) = {q ** (t + 1)} "
                             f"outputs; at most {ENUMERATION_LIMIT}")
        v = self.digits([item])[0]
        out = {}
        for u in itertools.product(range(q), repeat=t):
            target = (q - 1 - int(np.dot(u, v))) % q
            for r in range(q):
                out[(*u, r)] = (0.5 if r == target else 0.5 / (q - 1)) / q ** t
        return out
