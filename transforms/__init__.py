"""Beam adapters over the Beam-free ``protocols`` core: no protocol math lives here.

* ``avro_batches``: Avro report files (whole or in byte ranges) into numpy column batches
  (``ReportColumns``; Beam-free).
* ``parquet_batches``: Parquet report files (row-group ranges) into the same batches (Beam-free).
* ``io``: ``ReadReportFiles`` (match, split into ranges, reshuffle, read column batches),
  ``WriteDeadLetters``.
* ``parse``: ``ParseReports`` DoFn, vectorized validation with a tagged dead-letter output.
* ``estimate``: ``CountReports`` CombineFn, ``decode_counts``, ``EstimateFrequencies``.
* ``simulate``: ``SimulateReports`` (synthetic items randomized in batches inside the pipeline).
"""
from privfreq.transforms.estimate import CountReports, EstimateFrequencies, decode_counts
from privfreq.transforms.io import ReadReportFiles, WriteDeadLetters
from privfreq.transforms.parse import ParseReports
from privfreq.transforms.simulate import Distribution, SimulateReports

__all__ = [
    "CountReports",
    "Distribution",
    "EstimateFrequencies",
    "ParseReports",
    "ReadReportFiles",
    "SimulateReports",
    "WriteDeadLetters",
    "decode_counts",
]
