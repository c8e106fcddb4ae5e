"""Beam-free protocol core: numpy/scipy only, importable on a client device.

Importing this package registers every protocol in the registry of ``protocols.base``.
"""
from privfreq.protocols import (  # noqa: F401  (registration side effects)
    alh, ass, athe, aue, cms, compressed_mss, compressed_ss, dbitflip, grr, hadamard, lgrr, loloha, longitudinal_unary,
    mss, multidim, olh, pem, pgr, pi_rappor, rappor, subset_selection, unary_encoding)
from privfreq.protocols.base import (Counts, Estimate, FrequencyProtocol, Reason, ReportBatch,
                            get_protocol_class, protocol_ids)
from privfreq.protocols.config import CollectionConfig

__all__ = [
    "CollectionConfig",
    "Counts",
    "Estimate",
    "FrequencyProtocol",
    "Reason",
    "ReportBatch",
    "get_protocol_class",
    "protocol_ids",
]
