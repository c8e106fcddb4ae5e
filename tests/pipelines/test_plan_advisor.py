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
