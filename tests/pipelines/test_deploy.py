"""deploy/: every documented `privfreq` command line parses into valid pipeline options (nothing is
executed), the flex-template parameters are flags of the aggregate job, and the Dockerfiles refer to
files that exist."""
import json
import os
import re
import shlex

import pytest
from apache_beam.options.pipeline_options import (GoogleCloudOptions, PipelineOptions,
                                                  PortableOptions, StandardOptions,
                                                  _BeamArgumentParser)
from apache_beam.runners.portability import flink_runner, spark_runner  # noqa: F401  (their options)
from apache_beam.runners.runner import _RUNNER_MAP

from privfreq.pipelines import cli, common
from privfreq.protocols.config import CollectionConfig

ROOT = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)
DEPLOY = os.path.join(ROOT, "deploy")
CONFIG = CollectionConfig("mss", {"k": 30, "epsilon": 1.0, "moduli": [29, 31]})


def documented_commands() -> list[str]:
    """`privfreq ...` lines of the ```sh blocks of deploy/README.md, continuations joined."""
    with open(os.path.join(DEPLOY, "README.md")) as f:
        text = f.read()
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("privfreq "):
                out.append(" ".join(line.split()))
    return out


COMMANDS = documented_commands()


class _Parsed(Exception):
    """Raised in place of building the pipeline options, carrying the Beam flags."""


def strict_beam_options(flags: list[str]) -> PipelineOptions:
    """PipelineOptions from ``flags``; ``AssertionError`` on any flag no options class defines
    (Beam itself would only log and drop it) and argparse's error on an invalid value."""
    parser = _BeamArgumentParser(allow_abbrev=False)
    seen = {}
    for cls in PipelineOptions.__subclasses__():
        seen.setdefault(str(cls), cls)
    for cls in seen.values():
        cls._add_argparse_args(parser)  # noqa: SLF001  (what PipelineOptions.get_all_options does)
    _, unknown = parser.parse_known_args(flags)
    assert not unknown, f"unknown pipeline flags {unknown}"
    return PipelineOptions(flags)


def parse_command(line: str, monkeypatch) -> PipelineOptions:
    """Run the subcommand's own flag parsing up to the point where it builds pipeline options."""
    argv = shlex.split(line)
    assert argv[0] == "privfreq" and argv[1] in cli.SUBCOMMANDS, line
    monkeypatch.setattr(common, "load_config", lambda path: CONFIG)
    monkeypatch.setattr(common, "read_totals", lambda paths, config: None)

    def capture(beam_args, save_main_session):
        raise _Parsed(beam_args)

    monkeypatch.setattr(common, "pipeline_options", capture)
    with pytest.raises(_Parsed) as got:
        cli.main(argv[1:])
    return strict_beam_options(list(got.value.args[0]))


def check_runner(options: PipelineOptions) -> None:
    runner = options.view_as(StandardOptions).runner
    assert runner and runner.lower() in _RUNNER_MAP, runner
    all_opts = options.get_all_options()
    if runner == "DataflowRunner":
        gcp = options.view_as(GoogleCloudOptions)
        assert gcp.project and gcp.region and gcp.temp_location.startswith("gs://")
        assert all_opts["sdk_container_image"]
    elif runner == "PortableRunner":
        assert options.view_as(PortableOptions).job_endpoint
    elif runner == "FlinkRunner":
        assert all_opts["flink_master"]
    elif runner == "SparkRunner":
        assert all_opts["spark_master_url"]
    if runner in ("FlinkRunner", "SparkRunner") or (
            runner == "PortableRunner" and options.view_as(PortableOptions).job_endpoint != "embed"):
        env = options.view_as(PortableOptions)
        assert env.environment_type == "DOCKER" and env.environment_config


def test_readme_documents_every_runner():
    assert len(COMMANDS) >= 8
    runners = {re.search(r"--runner=(\w+)", c).group(1) for c in COMMANDS}
    assert {"DataflowRunner", "FlinkRunner", "SparkRunner", "PortableRunner",
            "FnApiRunner"} <= runners


@pytest.mark.parametrize("line", COMMANDS)
def test_documented_command_parses(line, monkeypatch):
    check_runner(parse_command(line, monkeypatch))


@pytest.mark.parametrize("line", [
    "privfreq aggregate --config c --input i --output o --runner=FlinkRunner --flink_master=h:8081"
    " --flink_version=0.9 --environment_type=DOCKER --environment_config=I",
    "privfreq aggregate --config c --input i --output o --runner=DataflowRunner --projekt=P",
])
def test_the_check_rejects_bad_flags(line, monkeypatch):
    with pytest.raises((AssertionError, SystemExit)):
        check_runner(parse_command(line, monkeypatch))


def test_flex_template_parameters_are_aggregate_flags(monkeypatch):
    with open(os.path.join(DEPLOY, "dataflow", "metadata.json")) as f:
        meta = json.load(f)
    params = meta["parameters"]
    assert {p["name"] for p in params if not p["isOptional"]} == {"config", "input", "output"}
    # The launcher passes each parameter as --name=value; Dataflow's own flags come from gcloud.
    flags = " ".join(f"--{p['name']}=gs://b/{p['name']}" for p in params)
    line = (f"privfreq aggregate {flags} --runner=DataflowRunner --project=P --region=R "
            f"--temp_location=gs://b/tmp --sdk_container_image=I")
    check_runner(parse_command(line, monkeypatch))
    for p in params:
        for rx in p.get("regexes", []):
            assert re.match(rx, f"gs://b/{p['name']}")


@pytest.mark.parametrize("dockerfile", ["sdk-container/Dockerfile", "dataflow/Dockerfile"])
def test_dockerfiles_copy_existing_files(dockerfile):
    with open(os.path.join(DEPLOY, dockerfile)) as f:
        text = f.read()
    assert "apache/beam_python3.11_sdk:2.77.0" in text  # same Beam as pyproject.toml pins
    for line in text.splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            for src in line.split()[1:-1]:
                if src == "README.md":  # pyproject's `readme`, required by `pip install .`;
                    with open(os.path.join(ROOT, "pyproject.toml")) as f:  # written elsewhere
                        assert 'readme = "README.md"' in f.read()
                    continue
                assert os.path.exists(os.path.join(ROOT, src)), src
        m = re.match(r"ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/privfreq/(\S+)", line)
        if m:
            assert os.path.isfile(os.path.join(ROOT, m.group(1)))
