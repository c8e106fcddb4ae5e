"""Shared plumbing of the Beam entry points: runner defaults, staged output directories, the
collection config, input patterns and ``--totals-in`` files on any Beam filesystem."""
from __future__ import annotations

import contextlib
import os

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from privfreq.protocols import totals as totals_lib
from privfreq.protocols.config import CollectionConfig
from privfreq.transforms.outputs import (commit_files, commit_output, discard_output,
                                         staging_dir, write_bytes_atomic, write_text_atomic)

__all__ = ["DEFAULT_RUNNER", "evaluate_command", "input_pattern", "load_config", "pipeline_options",
           "read_bytes", "read_totals", "run_trial_grid", "staged_output", "write_bytes_atomic",
           "write_text_atomic"]

# In-process and offline. DirectRunner in Beam 2.77 may switch to Prism, which downloads a binary.
DEFAULT_RUNNER = "FnApiRunner"


def pipeline_options(beam_args: list[str], save_main_session: bool) -> PipelineOptions:
    """PipelineOptions from the unparsed flags, with ``--runner=FnApiRunner`` unless one is given."""
    args = list(beam_args)
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args.append(f"--runner={DEFAULT_RUNNER}")
    options = PipelineOptions(args)
    options.view_as(SetupOptions).save_main_session = save_main_session
    return options


@contextlib.contextmanager
def staged_output(final: str, keep_other_files: bool = False):
    """``with staged_output(DIR) as tmp:`` write into ``tmp``; on success it becomes ``DIR``
    (``outputs.commit_output``; with ``keep_other_files``, its files replace their namesakes in
    ``DIR`` one rename each, ``outputs.commit_files``), on failure it is removed and ``DIR`` is
    left untouched."""
    tmp = staging_dir(final)
    try:
        yield tmp
    except BaseException:
        discard_output(tmp)
        raise
    (commit_files if keep_other_files else commit_output)(tmp, final)


def read_bytes(path: str) -> bytes:
    """The bytes of ``path`` on any Beam filesystem, as stored."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


def load_config(path: str) -> CollectionConfig:
    """The collection config from a local path or any Beam filesystem (``gs://`` on Dataflow)."""
    return CollectionConfig.from_json(read_bytes(path).decode("utf-8"))


def read_totals(paths: list[str], config: CollectionConfig) -> totals_lib.Totals | None:
    """Load and merge ``--totals-in`` files (any Beam filesystem); ``ValueError`` on a config
    mismatch, naming the file."""
    loaded = []
    for path in paths:
        t = totals_lib.loads(read_bytes(path), path)
        if t.fingerprint != config.fingerprint:
            raise ValueError(
                f"--totals-in {path}: totals of config {t.fingerprint} ({t.config.protocol_id}) "
                f"cannot be merged into a run of config {config.fingerprint} "
                f"({config.protocol_id})")
        loaded.append(t)
    return totals_lib.merge(loaded) if loaded else None


def input_pattern(pattern: str) -> str:
    """Local patterns made absolute: Beam's local match finds nothing for a bare relative glob
    such as ``reports*.avro`` (it does for ``./reports*.avro``)."""
    return pattern if "://" in pattern else os.path.abspath(pattern)


def evaluate_command(argv) -> str:
    """The ``privfreq evaluate ...`` command line of a run, shell-quoted (for its report)."""
    import shlex
    import sys
    return "privfreq evaluate " + " ".join(
        shlex.quote(a) for a in (sys.argv[2:] if argv is None else argv))


def run_trial_grid(options: PipelineOptions, specs: list, run_trial, cell_of, summarise,
                   write_outputs, out_dir: str, meta: dict) -> None:
    """An evaluation grid as a Beam job, one element per trial: ``run_trial(spec)`` → trial,
    grouped by ``cell_of(trial)``, ``summarise(cell, trials)`` → rows of that cell, all rows
    collected into one list, ``write_outputs(rows, out_dir, meta)``."""
    import apache_beam as beam
    with beam.Pipeline(options=options) as p:
        _ = (p | "Trials" >> beam.Create(specs)
             | "Run" >> beam.Map(run_trial)
             | "ByCell" >> beam.Map(lambda t: (cell_of(t), t))
             | "Group" >> beam.GroupByKey()
             | "Summarise" >> beam.FlatMapTuple(lambda key, ts: summarise(key, list(ts)))
             | "ToList" >> beam.combiners.ToList()
             | "Write" >> beam.Map(write_outputs, out_dir, meta))
