"""``privfreq config`` refuses unsendable reports before planning; ``privfreq plan`` as an advisor
(issue 15)."""
import json
import logging
import time

import pytest

from privfreq.pipelines import cli
from privfreq.protocols.config import CollectionConfig


def test_config_refuses_huge_mss_reports_before_planning(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"mss reports of at least ~70,502 values.*32,767 bytes"
                                         r".*--max-report-bytes = 16,384"):
        cli.main(["config", "--protocol", "mss", "--k", "1048576", "--epsilon", "1",
                  "--output", str(tmp_path / "c.json")])
    assert time.perf_counter() - t0 < 5          # refused in O(1): the planner takes ~23 s here
    assert not (tmp_path / "c.json").exists()


def test_config_refuses_huge_ss_reports_and_allows_with_flag(tmp_path, caplog):
    args = ["config", "--protocol", "ss", "--k", "1048576", "--epsilon", "1",
            "--output", str(tmp_path / "c.json")]
    with pytest.raises(ValueError, match=r"282,006 values.*131,072 bytes per report.*8\.0x"):
        cli.main(args)
    with caplog.at_level(logging.WARNING):
        assert cli.main(args + ["--allow-large-reports"]) == 0
    assert "allowed by --allow-large-reports" in caplog.text
    assert CollectionConfig.load(str(tmp_path / "c.json")).params["k"] == 1048576


def test_config_max_report_bytes_is_adjustable(tmp_path):
    args = ["config", "--protocol", "oue", "--k", "4096", "--epsilon", "1",
            "--output", str(tmp_path / "c.json")]
    assert cli.main(args) == 0                                     # 512 bytes
    with pytest.raises(ValueError, match="512 bytes per report"):
        cli.main(args + ["--max-report-bytes", "100"])


def _plan_json(capsys, *args):
    assert cli.main(["plan", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_plan_advisor_ranks_every_one_shot_protocol_under_a_byte_limit(capsys):
    from privfreq.protocols.advisor import ONE_SHOT
    rows = _plan_json(capsys, "--k", "50000", "--epsilon", "2", "--n", "10000000",
                      "--max-bytes", "1024")
    assert sorted(r["protocol_id"] for r in rows) == sorted(ONE_SHOT)
    ok = [r for r in rows if not r["ruled_out"]]
    bad = [r for r in rows if r["ruled_out"]]
    assert rows[:len(ok)] == ok                                   # feasible first
    assert all(r["wire_bytes"] <= 1024 for r in ok)
    assert [r["mse"] for r in ok] == sorted(r["mse"] for r in ok)
    for r in bad:                                                 # the limit and the factor
        assert r["protocol_id"] in ("css", "cmss") or any(
            w.startswith("max_bytes") and "x the limit 1,024" in w for w in r["ruled_out"])
    ss = next(r for r in rows if r["protocol_id"] == "ss")
    assert "6,250 bytes per report, 6.1x" in ss["ruled_out"][0]
    mss = next(r for r in rows if r["protocol_id"] == "mss")
    assert "every feasible moduli set needs >= 1,489 bytes" in mss["ruled_out"][0]
    css = next(r for r in rows if r["protocol_id"] == "css")
    assert css["privacy"] == "computational" and css["wire_bytes"] == 8
    assert css["ruled_out"] == ["privacy: computational (ε-LDP only against an adversary who "
                                "cannot break the PRG); allow with --allow-computational"]
    for r in ok:
        assert r["mse"] == r["mse_n1"] / 10**7 and 0 < r["asr"] < 1


def test_plan_allow_computational_ranks_css(capsys):
    rows = _plan_json(capsys, "--k", "60", "--epsilon", "2", "--allow-computational")
    css = next(r for r in rows if r["protocol_id"] == "css")
    assert not css["ruled_out"] and css["privacy"] == "computational"


def test_plan_advisor_objectives(capsys):
    rows = _plan_json(capsys, "--k", "60", "--epsilon", "1", "--objective", "bytes")
    ok = [r for r in rows if not r["ruled_out"]]
    best = min(r["mse"] for r in ok)
    within = [r for r in ok if r["mse"] <= 2 * best * (1 + 1e-12)]
    assert [r["wire_bytes"] for r in ok[:len(within)]] == sorted(r["wire_bytes"] for r in within)
    assert ok[0]["protocol_id"] != "grr"          # GRR's MSE at k = 60, ε = 1 is ~20x the best
    rows = _plan_json(capsys, "--k", "60", "--epsilon", "1", "--objective", "asr",
                      "--delta", "0.5")
    ok = [r for r in rows if not r["ruled_out"]]
    best = min(r["mse"] for r in ok)
    within = [r for r in ok if r["mse"] <= 1.5 * best * (1 + 1e-12)]
    assert ok[:len(within)] == sorted(within, key=lambda r: r["asr"])
    # the refined protocols' knobs were tuned for ASR: ASS's ω exceeds SS's
    ass = next(r for r in rows if r["protocol_id"] == "ass")
    assert ass["params"]["omega"] > 16


def test_plan_server_time_limit_names_the_factor(capsys):
    rows = _plan_json(capsys, "--k", "5000", "--epsilon", "1", "--n", "100000000",
                      "--max-server-seconds", "30")
    olh = next(r for r in rows if r["protocol_id"] == "olh")
    if olh["server_s"] is not None:           # fitted constants present (protocols.cost_constants)
        assert olh["server_s"] > 30
        assert any(w.startswith("max_server_seconds") for w in olh["ruled_out"])


def test_plan_protocol_mss_keeps_the_moduli_ranking(capsys):
    rows = _plan_json(capsys, "--k", "40", "--epsilon", "1", "--protocol", "mss", "--top", "2")
    assert 1 <= len(rows) <= 2 and all("moduli" in r and "asr" in r for r in rows)
    asr_rows = _plan_json(capsys, "--k", "40", "--epsilon", "1", "--protocol", "mss",
                          "--objective", "asr", "--top", "3")
    assert [r["asr"] for r in asr_rows] == sorted(r["asr"] for r in asr_rows)


def test_config_auto_takes_the_advisors_first_pick(tmp_path, capsys):
    from privfreq.protocols.advisor import advise
    first = advise(60, 2.0, max_bytes=16384)[0]
    assert cli.main(["config", "--protocol", "auto", "--k", "60", "--epsilon", "2",
                     "--output", str(tmp_path / "c.json")]) == 0
    cfg = CollectionConfig.load(str(tmp_path / "c.json"))
    assert cfg.protocol_id == first.protocol_id
    assert {k: cfg.params[k] for k in first.params} == first.params


def test_config_labels_computational_privacy(tmp_path, capsys, caplog):
    with caplog.at_level(logging.WARNING):
        assert cli.main(["config", "--protocol", "css", "--k", "60", "--epsilon", "2",
                         "--output", str(tmp_path / "c.json")]) == 0
    assert "privacy=computational" in capsys.readouterr().out
    assert "privacy is computational" in caplog.text
