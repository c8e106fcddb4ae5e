"""File I/O transforms: report files in as column batches, dead letters out as Avro. Beam sources
and sinks around the Beam-free readers of ``schemas.avro`` and ``schemas.parquet``.

Reading is split below the file level, so a runner parallelizes one big file: every matched file is
cut into ranges (Avro: byte ranges of ``split_bytes``, each reader resynchronising on the sync
marker; Parquet: runs of row groups), the ranges are reshuffled across workers, and each range is
read into ``ReportColumns`` batches. Reading a file in any number of ranges gives exactly the
records (and dead letters) of reading it whole.
"""

import concurrent.futures
import os
from typing import Iterator, Sequence, Tuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes, FileMetadata
from apache_beam.io.filesystems import FileSystems

from privfreq import schemas
from privfreq.protocols.totals import InputFile
from privfreq.schemas.avro import read_avro_range
from privfreq.schemas.files import chunk_digest, combine_digests, digest_chunks
from privfreq.schemas.columns import ReportColumns
from privfreq.schemas.parquet import PARQUET_MAGIC, read_parquet_range

__all__ = ["DEFAULT_SPLIT_BYTES", "DEFAULT_SPLIT_ROWS", "DIGEST_THREADS", "FileRange",
           "ReadReportFiles", "ReadReportRanges", "SplitReportFiles", "WriteDeadLetters",
           "digest_inputs", "match_inputs", "open_file", "read_range",
           "report_format", "split_ranges"]

# Avro files are read in byte ranges of 16 MiB: ~0.6 M GRR or ~0.1 M k=1024 MSS reports, 0.05-1 s
# of work per range. Ranges are static (no dynamic rebalancing), so they must be many per worker:
# 64 MiB (Beam's file-source default) gave a 10^6-report MSS file only 3 ranges for 2 workers. Per
# range costs (open, header, resync within one <= 1 MiB block) stay < 1%.
DEFAULT_SPLIT_BYTES = 16 << 20
# Parquet ranges are runs of whole row groups, closed at 2^20 rows or split_bytes (uncompressed),
# whichever comes first: the same amount of work per range as an Avro range of GRR reports.
DEFAULT_SPLIT_ROWS = 1 << 20

# (path, format, start, end): Avro byte offsets or Parquet row-group indices, end exclusive.
FileRange = Tuple[str, str, int, int]


def open_file(path: str):
    """``path`` on any Beam filesystem, opened for reading as stored (no decompression)."""
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


# Digest threads: hashlib and file reads release the GIL, so chunks hash in parallel; twice the
# cores keeps the CPUs busy while some threads wait on storage (object stores: network reads).
DIGEST_THREADS = 2 * (os.cpu_count() or 1)


def match_inputs(pattern: str) -> list[FileMetadata]:
    """The files matching ``pattern`` on any Beam filesystem, sorted by path; ``ValueError`` when
    it matches nothing (a typo, not an empty input)."""
    try:
        found = FileSystems.match([pattern])[0].metadata_list
    except Exception as e:  # noqa: BLE001  (e.g. the directory does not exist)
        raise ValueError(f"--input {pattern}: matched no file ({e})") from None
    found = [m for m in found if not m.path.endswith("/")]
    if not found:
        raise ValueError(f"--input {pattern}: matched no file")
    return sorted(found, key=lambda m: m.path)


def digest_inputs(files: Sequence[FileMetadata], threads: int = DIGEST_THREADS
                  ) -> list[InputFile]:
    """The content digest (``schemas.files``) of every file, its chunks hashed by ``threads``
    threads; one ``InputFile`` per file, in order."""
    tasks = [(i, start, end) for i, m in enumerate(files)
             for start, end in digest_chunks(m.size_in_bytes)]

    def work(task):
        i, start, end = task
        with open_file(files[i].path) as fo:
            return chunk_digest(fo, start, end)

    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
        done = list(pool.map(work, tasks))
    per_file: list[list[bytes]] = [[] for _ in files]
    for (i, _, _), d in zip(tasks, done):
        per_file[i].append(d)
    return [InputFile(combine_digests(per_file[i]), int(m.size_in_bytes), m.path)
            for i, m in enumerate(files)]


def report_format(path: str, head: bytes = b"") -> str:
    """``parquet`` or ``avro``: by extension, else by the file's first bytes (default Avro)."""
    lower = path.lower()
    if lower.endswith(".parquet"):
        return "parquet"
    if lower.endswith(".avro"):
        return "avro"
    return "parquet" if head[:4] == PARQUET_MAGIC else "avro"


def split_ranges(fo, path: str, size: int, split_bytes: int = DEFAULT_SPLIT_BYTES,
                 split_rows: int = DEFAULT_SPLIT_ROWS) -> list[FileRange]:
    """The ranges one file is read in (at least one, even for an empty or unreadable file)."""
    head = b""
    if not path.lower().endswith((".avro", ".parquet")):
        fo.seek(0)
        head = fo.read(4)
    fmt = report_format(path, head)
    if fmt == "avro":
        bounds = list(range(0, max(size, 1), max(1, split_bytes))) + [max(size, 1)]
        return [(path, fmt, a, b) for a, b in zip(bounds, bounds[1:])]
    import pyarrow.parquet as pq  # noqa: PLC0415  (only for Parquet inputs)
    try:
        md = pq.ParquetFile(fo).metadata
    except Exception:  # noqa: BLE001  (unreadable footer: one range reports it)
        return [(path, fmt, 0, 1)]
    out, first, rows, nbytes = [], 0, 0, 0
    for g in range(md.num_row_groups):
        rows += md.row_group(g).num_rows
        nbytes += md.row_group(g).total_byte_size
        if rows >= split_rows or nbytes >= split_bytes:
            out.append((path, fmt, first, g + 1))
            first, rows, nbytes = g + 1, 0, 0
    if first < md.num_row_groups or not out:
        out.append((path, fmt, first, max(md.num_row_groups, first + 1)))
    return out


def read_range(fo, file_range: FileRange, batch_rows: int) -> Iterator[ReportColumns]:
    """The ReportColumns batches of one FileRange of the open file ``fo``."""
    path, fmt, start, end = file_range
    reader = read_parquet_range if fmt == "parquet" else read_avro_range
    yield from reader(fo, path, batch_rows, start, end)


@beam.typehints.with_output_types(Tuple[str, str, int, int])
class SplitReportFiles(beam.DoFn):
    """A matched file -> its FileRanges (Parquet: reads only the footer)."""

    def __init__(self, split_bytes: int = DEFAULT_SPLIT_BYTES,
                 split_rows: int = DEFAULT_SPLIT_ROWS):
        self._split_bytes = split_bytes
        self._split_rows = split_rows

    def process(self, metadata) -> Iterator[FileRange]:
        with open_file(metadata.path) as fo:
            yield from split_ranges(fo, metadata.path, metadata.size_in_bytes,
                                    self._split_bytes, self._split_rows)


@beam.typehints.with_input_types(Tuple[str, str, int, int])
@beam.typehints.with_output_types(ReportColumns)
class ReadReportRanges(beam.DoFn):
    """A FileRange -> ReportColumns batches (never one element per report). Undecodable content
    becomes a batch's ``unreadable`` remainder."""

    def __init__(self, batch_rows: int):
        self._batch_rows = batch_rows

    def process(self, file_range: FileRange) -> Iterator[ReportColumns]:
        with open_file(file_range[0]) as fo:
            yield from read_range(fo, file_range, self._batch_rows)


class ReadReportFiles(beam.PTransform):
    """PBegin -> PCollection[ReportColumns] from every file matching ``pattern``, or of ``files``
    (``InputFile``s chosen before the job), Avro or Parquet by extension or content.

    ``empty_match_treatment=DISALLOW``: a pattern that matches nothing is a user error (a typo),
    not an empty collection, and fails the job at once.
    """

    def __init__(self, pattern: str | None, batch_rows: int,
                 split_bytes: int = DEFAULT_SPLIT_BYTES, split_rows: int = DEFAULT_SPLIT_ROWS,
                 files: Sequence[InputFile] | None = None):
        super().__init__()
        if (pattern is None) == (files is None):
            raise ValueError("ReadReportFiles: give exactly one of pattern and files")
        self._pattern = pattern
        self._files = None if files is None else [(f.path, f.size) for f in files]
        self._batch_rows = batch_rows
        self._split_bytes = split_bytes
        self._split_rows = split_rows

    def expand(self, pbegin):
        if self._files is None:
            metadata = pbegin | "Match" >> fileio.MatchFiles(
                self._pattern, empty_match_treatment=fileio.EmptyMatchTreatment.DISALLOW)
        else:  # the files chosen before the job (digested, seen ones skipped): no re-matching
            metadata = (pbegin | "Files" >> beam.Create(self._files)
                        | "Metadata" >> beam.MapTuple(FileMetadata))
        ranges = (metadata
                  # pcoll: FileMetadata(path, size_in_bytes, ...)
                  | "Split" >> beam.ParDo(SplitReportFiles(self._split_bytes, self._split_rows))
                  # pcoll: (path, "avro"|"parquet", start, end)
                  | "SpreadRanges" >> beam.Reshuffle())
        return ranges | "ReadRanges" >> beam.ParDo(ReadReportRanges(self._batch_rows))
        # pcoll: ReportColumns(source, fp_codes[int32, b], ..., payload_offsets[int64, b + 1])


class WriteDeadLetters(beam.PTransform):
    """PCollection[list[dead-letter dict]] -> ``<prefix>-SSSSS-of-NNNNN.avro`` (dead_letter.avsc).

    Only rejected reports are expanded to one element each; accepted ones never reach this path.
    """

    def __init__(self, file_path_prefix: str):
        super().__init__()
        self._prefix = file_path_prefix

    def expand(self, dead_lists):
        return (dead_lists
                | "Flatten" >> beam.FlatMap(lambda dead: dead)
                | "WriteAvro" >> beam.io.WriteToAvro(
                    self._prefix, schema=schemas.dead_letter_schema(), file_name_suffix=".avro"))
