"""The averaging attack memoization prevents (protocols/longitudinal_attacks.py) and the audit of
the longitudinal protocols' two stages (protocols/audit.py, `privfreq audit --stage`)."""
import json
import math

import numpy as np
import pytest

from privfreq.protocols.audit import audit
from privfreq.protocols.dbitflip import DBitFlipPM
from privfreq.protocols.grr import GRR
from privfreq.protocols.lgrr import LGRR
from privfreq.protocols.loloha import LOLOHA
from privfreq.protocols.longitudinal_attacks import averaging_attack_asr
from privfreq.protocols.longitudinal_unary import LOSUE
from privfreq.protocols.olh import OLH

K, EPS_PERM, EPS1, USERS, ROUNDS = 32, 2.0, 0.8, 2000, 100
# ASR is a mean of 2000 Bernoulli: sd <= 0.0112; margins of >= 0.05 are > 4.4 sd (false failure
# < 1e-5 per comparison).
MARGIN = 0.05


def test_averaging_attack_breaks_rerandomization_not_memoization():
    rng = np.random.default_rng(50)
    asr = {type(p).__name__: averaging_attack_asr(p, ROUNDS, USERS, rng)
           for p in (GRR(K, EPS1), OLH(K, EPS1), LGRR(K, EPS_PERM, EPS1),
                     LOLOHA(K, EPS_PERM, EPS1))}
    e = math.exp(EPS_PERM)
    lgrr_limit = e / (e + K - 1)                      # the memo itself: GRR_k(ε∞)
    lo = LOLOHA(K, EPS_PERM, EPS1)
    loloha_limit = lo.p1 * lo.g * -math.expm1(K * math.log1p(-1 / lo.g)) / K
    # one round: every protocol near its one-report ASR
    assert abs(asr["GRR"][0] - GRR(K, EPS1).p) < MARGIN
    # T = 100: the re-randomized protocols leak far past what ε∞ allows; the memoized ones do not
    assert asr["GRR"][-1] > lgrr_limit + 0.15
    assert asr["OLH"][-1] > 0.8
    assert asr["LGRR"][-1] < lgrr_limit + MARGIN
    assert asr["LOLOHA"][-1] < loloha_limit + MARGIN
    # and their attack saturates: the last 50 rounds add (almost) nothing
    assert abs(asr["LGRR"][-1] - asr["LGRR"][49]) < MARGIN


def test_averaging_attack_rejects_unsupported_protocol():
    with pytest.raises(ValueError, match="no support mask"):
        averaging_attack_asr(LOSUE(8, 2.0, 1.0), 2, 10, np.random.default_rng(0))


@pytest.mark.parametrize("proto", [LGRR(6, 2.0, 0.8), LOSUE(4, 2.0, 0.8),
                                   DBitFlipPM(4, 2.0, d=2)], ids=["lgrr", "losue", "dbitflip"])
def test_audit_both_stages_below_and_near_the_claims(proto):
    rng = np.random.default_rng(51)
    rep = audit(proto, samples=200_000, rng=rng)
    perm = audit(proto, samples=200_000, rng=rng, stage="permanent")
    assert rep.stage == "report" and rep.epsilon == proto.epsilon
    assert perm.stage == "permanent" and perm.epsilon == proto.epsilon_perm
    # valid lower bounds (confidence 0.95 each, fixed seed) and tight for these small outputs
    assert rep.epsilon_lower_bound <= proto.epsilon
    assert perm.epsilon_lower_bound <= proto.epsilon_perm
    assert rep.epsilon_lower_bound > 0.8 * proto.real_epsilon
    assert perm.epsilon_lower_bound > 0.8 * proto.real_epsilon_perm


def test_audit_stage_validation():
    with pytest.raises(ValueError, match="longitudinal"):
        audit(GRR(4, 1.0), samples=100, stage="permanent")
    with pytest.raises(ValueError, match="stage must be"):
        audit(LGRR(4, 2.0, 1.0), samples=100, stage="round")


def test_audit_cli_stage(tmp_path, capsys):
    from privfreq.pipelines.audit import run
    out = tmp_path / "a.json"
    run(["--protocol", "lgrr", "--k", "6", "--epsilon", "0.8", "--param", "epsilon_perm=2",
         "--stage", "permanent", "--samples", "50000", "--seed", "3", "--output", str(out)])
    res = json.loads(out.read_text())
    assert res["stage"] == "permanent" and res["epsilon"] == 2.0
    assert 1.5 < res["epsilon_lower_bound"] <= 2.0
