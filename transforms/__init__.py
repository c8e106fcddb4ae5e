"""Beam adapters over the Beam-free ``protocols`` core and ``schemas`` codecs: no protocol math
and no file-format code lives here.

* ``io``: ``ReadReportFiles`` (match, split into ranges, reshuffle, read column batches with the
  ``schemas.avro``/``schemas.parquet`` readers), ``WriteDeadLetters``.
* ``parse``: ``ParseReports`` DoFn, vectorized validation with a tagged dead-letter output.
* ``estimate``: ``CountReports`` CombineFn, ``decode_counts``, ``EstimateFrequencies``.
* ``outputs``: estimates.parquet / summary.json / estimates.png, staged and atomic writes.
* ``streaming``: event-time sources (file watcher, Pub/Sub and Kafka messages), windowed
  estimates, per-pane outputs.
* ``simulate``: ``SimulateReports`` (synthetic items randomized in batches inside the pipeline).
* ``evaluation``: the protocols × k × ε × distributions grid of ``privfreq evaluate``.
"""
