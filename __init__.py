"""privfreq: private frequency estimation under local differential privacy.

``privfreq.protocols`` (numpy/scipy only: randomizers, accumulators, estimators) and
``privfreq.schemas`` (report formats) are what a client needs; ``privfreq.transforms`` and
``privfreq.pipelines`` are the Apache Beam server side and the ``privfreq`` command line.
"""
__version__ = "0.1.0"
