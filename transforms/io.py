"""File I/O transforms: report files in as column batches, dead letters out as Avro."""

from typing import Iterator

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

import schemas
from transforms.avro_batches import ReportColumns, read_report_columns

__all__ = ["ReadReportColumns", "ReadReportFiles", "WriteDeadLetters"]


@beam.typehints.with_output_types(ReportColumns)
class ReadReportColumns(beam.DoFn):
    """A matched file -> ReportColumns batches (``fastavro.block_reader``, never one element per
    report). Undecodable content becomes the last batch's ``unreadable`` remainder."""

    def __init__(self, batch_rows: int):
        self._batch_rows = batch_rows

    def process(self, metadata) -> Iterator[ReportColumns]:
        path = metadata.path
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fo:
            yield from read_report_columns(fo, path, self._batch_rows)


class ReadReportFiles(beam.PTransform):
    """PBegin -> PCollection[ReportColumns] from every file matching ``pattern``.

    ``empty_match_treatment=DISALLOW``: a pattern that matches nothing is a user error (a typo),
    not an empty collection, and fails the job at once.
    """

    def __init__(self, pattern: str, batch_rows: int):
        super().__init__()
        self._pattern = pattern
        self._batch_rows = batch_rows

    def expand(self, pbegin):
        files = (pbegin
                 | "Match" >> fileio.MatchFiles(
                     self._pattern, empty_match_treatment=fileio.EmptyMatchTreatment.DISALLOW)
                 | "SpreadFiles" >> beam.Reshuffle())
        # pcoll: FileMetadata(path, size_in_bytes, ...)
        return files | "ReadBlocks" >> beam.ParDo(ReadReportColumns(self._batch_rows))
        # pcoll: ReportColumns(source, fingerprint[object, b], ..., payload[object, b])


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
