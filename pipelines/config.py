"""Write a collection config (protocol id + params + schema version, with its fingerprint).

    privfreq config --protocol mss --k 1024 --epsilon 1 --output config.json
    privfreq config --protocol mss --k 1024 --epsilon 1 --moduli 991,1009 --param ridge=0 \\
        --output config.json

A protocol with a ``moduli`` parameter (MSS) given no ``--moduli`` takes the planner's best
candidate (``protocols.planner.plan``). The file is written whole or not at all.

Reports larger than ``--max-report-bytes`` (default 16 KiB) are refused before anything is planned
or allocated, with the report size (values per report and payload bytes); ``--allow-large-reports``
overrides. ``privfreq config --protocol mss --k 1048576 --epsilon 1`` asks for 282 005 values
(~128 KiB) per report and is refused.
Invalid parameters fail with a ``ValueError`` naming the field and its valid range.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging

from privfreq.protocols.base import get_protocol_class
from privfreq.protocols.config import CollectionConfig
from privfreq.schemas.files import replaced_atomically


def add_protocol_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", required=True,
                        help="protocol id (mss, ss, grr, ...), or 'auto': the first pick of "
                             "`privfreq plan` (objective mse, reports within --max-report-bytes)")
    parser.add_argument("--k", type=int, required=True, help="universe size")
    parser.add_argument("--epsilon", type=float, required=True, help="privacy budget (> 0)")
    parser.add_argument("--moduli", default=None, help="MSS moduli, comma-separated: a,b,c")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="extra protocol parameter (value parsed as JSON, else a string); "
                             "repeatable")
    parser.add_argument("--max-report-bytes", type=int, default=DEFAULT_MAX_REPORT_BYTES,
                        help="refuse configs whose reports exceed this many payload bytes "
                             f"(default {DEFAULT_MAX_REPORT_BYTES})")
    parser.add_argument("--allow-large-reports", action="store_true",
                        help="warn instead of refusing when reports exceed --max-report-bytes")


# Default bound on one report's payload: 16 KiB. At 10^7 reports a day that is 160 GB of ingest and
# of server work per day (SS-type servers touch every value); a unary bitmap reaches it at
# k = 131 072. Larger configs need --allow-large-reports (or --max-report-bytes).
DEFAULT_MAX_REPORT_BYTES = 16384


def _parse_param(text: str) -> tuple[str, object]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f"param: expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def parse_moduli(text: str) -> list[int]:
    try:
        return [int(m) for m in text.split(",") if m.strip()]
    except ValueError:
        raise ValueError(f"moduli: must be comma-separated integers, got {text!r}") from None


def _takes_moduli(protocol_id: str) -> bool:
    try:
        cls = get_protocol_class(protocol_id)
    except ValueError:
        return False  # CollectionConfig below names the valid ids
    return any(f.name == "moduli" for f in dataclasses.fields(cls))


def report_size(protocol) -> tuple[int, float, int]:
    """``(values per report, mean payload bytes, largest payload bytes)`` over the blocks."""
    widths = [protocol.payload_width(b) for b in range(protocol.n_blocks)]
    return protocol.values_width, sum(widths) / len(widths), max(widths)


def _size_limit(args, what: str, nbytes: float, detail: str) -> None:
    """Refuse (or warn, with --allow-large-reports) when ``nbytes`` exceeds --max-report-bytes."""
    limit = getattr(args, "max_report_bytes", DEFAULT_MAX_REPORT_BYTES)
    if limit is None or nbytes <= limit:
        return
    msg = (f"config: {what} reports of {detail} ({nbytes:,.0f} bytes per report) exceed "
           f"--max-report-bytes = {limit:,} by {nbytes / limit:.1f}x; run `privfreq plan --k "
           f"{args.k} --epsilon {args.epsilon} --max-bytes {limit}` for protocols that fit, or "
           f"pass --allow-large-reports")
    if getattr(args, "allow_large_reports", False):
        logging.warning("%s", msg.split("; run")[0] + " (allowed by --allow-large-reports)")
        return
    raise ValueError(msg)


def build_config(args) -> CollectionConfig:
    """CollectionConfig from parsed --protocol/--k/--epsilon/--moduli/--param flags.

    Refuses (``ValueError``) reports above ``--max-report-bytes`` before planning or allocating:
    for MSS without moduli, first against ``planner.min_payload_bytes`` (O(1)), then exactly."""
    params: dict = {"k": args.k, "epsilon": args.epsilon}
    if args.protocol == "auto":
        from privfreq.protocols.advisor import advise
        best = advise(args.k, args.epsilon,
                      max_bytes=getattr(args, "max_report_bytes", DEFAULT_MAX_REPORT_BYTES))[0]
        if not best.feasible:
            raise ValueError(f"config: --protocol auto: no protocol fits; the closest, "
                             f"{best.protocol_id}, is ruled out by {best.ruled_out[0]}")
        logging.info("config: the advisor chose %s %s (n·MSE %.4g, %.0f bytes, ASR %.3g)",
                     best.protocol_id, best.params, best.mse_n1, best.wire_bytes, best.asr)
        args.protocol = best.protocol_id
        params.update(best.params)
        if "moduli" in params and args.moduli is None:
            args.moduli = ",".join(map(str, params.pop("moduli")))
    for text in args.param:
        name, value = _parse_param(text)
        if name in params or name == "moduli":
            raise ValueError(f"param: {name!r} has its own flag (--{name}); do not pass it with "
                             f"--param")
        params[name] = value
    if args.moduli is not None:
        params["moduli"] = parse_moduli(args.moduli)
    elif _takes_moduli(args.protocol):
        from privfreq.protocols.planner import plan
        from privfreq.protocols.subset_selection import ss_constants
        low = get_protocol_class(args.protocol).min_report_bytes(args.k, args.epsilon)
        m_low = -(-(args.k + 3) // 4)              # ℓ <= 4 moduli summing to >= k + ℓ − 1
        _size_limit(args, args.protocol, low,
                    f"at least ~{ss_constants(m_low, args.epsilon).omega:,} values for any "
                    f"feasible moduli (sum of moduli >= k; the planner's pick is usually ~k)")
        best = plan(args.k, args.epsilon, top=1)[0]
        logging.info("config: planner chose moduli %s (bits %.1f, MSE ratio to SS %.3f)",
                     list(best.moduli), best.bits, best.mse_ratio_ss)
        params["moduli"] = list(best.moduli)
    config = CollectionConfig(args.protocol, params)
    proto = config.protocol
    values, mean_bytes, max_bytes = report_size(proto)
    _size_limit(args, args.protocol, mean_bytes,
                f"{values:,} values (largest block {max_bytes:,} bytes)")
    return config


def save_atomic(config: CollectionConfig, path: str) -> None:
    """Write the config JSON whole or not at all."""
    with replaced_atomically(path) as tmp:
        config.save(tmp)


def run(argv=None, save_main_session=True):
    parser = argparse.ArgumentParser(prog="privfreq config", description=__doc__.split("\n")[0])
    add_protocol_args(parser)
    parser.add_argument("--output", required=True, help="where to write the config JSON")
    args = parser.parse_args(argv)
    config = build_config(args)
    save_atomic(config, args.output)
    privacy = getattr(config.protocol, "privacy_kind", "pure")
    print(f"{args.output}: protocol={config.protocol_id} fingerprint={config.fingerprint} "
          f"params={json.dumps(config.to_dict()['params'])} privacy={privacy}")
    if privacy == "computational":
        logging.warning("config: %s reports are PRG seeds: privacy is computational (ε-LDP only "
                        "against an adversary who cannot break the PRG)", config.protocol_id)
    return config


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
