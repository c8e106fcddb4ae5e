"""Write a collection config (protocol id + params + schema version, with its fingerprint).

    privfreq config --protocol mss --k 1024 --epsilon 1 --output config.json
    privfreq config --protocol mss --k 1024 --epsilon 1 --moduli 991,1009 --param ridge=0 \\
        --output config.json

A protocol with a ``moduli`` parameter (MSS) given no ``--moduli`` takes the planner's best
candidate (``protocols.planner.plan``). The file is written whole or not at all.

Several attributes per user (SPEC §8; docs/multidimensional.md)::

    privfreq config --protocol smp --attributes age:8,country:200,app:22000 --epsilon 2 \
        [--inner auto|grr|oue|olh|ss|mss|...] --output c.json
    privfreq config --protocol rsfd --attributes age:8,country:200 --epsilon 2 --fake oue-z ...
    privfreq config --protocol allomfree --attributes age:8,app:300 --epsilon 1 \
        --epsilon-perm 3 --output c.json

``--attributes`` is ``name:k,...`` (or ``k,...``: names ``a1, a2, ...``) and replaces ``--k``;
``--inner`` is one id for every attribute or one per attribute, comma-separated (``auto``: the
least-variance one-shot protocol at (ε, k_j), MSS with the planner's moduli; ALLOMFREE: L-GRR or
L-OSUE). The config line printed names the tuple-level ε (RS+FD: ε′ = ln(d(e^ε−1)+1) beside ε).

Items with names (any one-attribute protocol, MSS included)::

    privfreq config --protocol mss --domain names.txt [--unknown other] --epsilon 1 --output c.json

k is the number of names (one UTF-8 name per line; + 1 with ``--unknown other``, the explicit
"other" item); the config records the dictionary's fingerprint, size and ``other``
(``protocols.domain``); ``encode``/``aggregate``/``simulate`` take the same ``--domain`` file.

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
    parser.add_argument("--k", type=int, default=None,
                        help="universe size (or --attributes for several attributes)")
    parser.add_argument("--epsilon", type=float, required=True, help="privacy budget (> 0)")
    parser.add_argument("--attributes", default=None, metavar="NAME:K,...",
                        help="multi-attribute protocols (spl, smp, rsfd, allomfree): the "
                             "attributes and their domain sizes, e.g. age:8,country:200 (or "
                             "8,200: names a1, a2)")
    parser.add_argument("--inner", default=None,
                        help="multi-attribute: inner protocol id for every attribute, or one "
                             "per attribute comma-separated (default auto)")
    parser.add_argument("--fake", default=None, help="rsfd: fake data grr | oue-z | oue-r")
    parser.add_argument("--domain", default=None, metavar="NAMES.txt",
                        help="items with names: one UTF-8 name per line; k = the number of names "
                             "(+1 with --unknown other); the config records the dictionary's "
                             "fingerprint")
    parser.add_argument("--unknown", choices=("error", "other"), default="error",
                        help="with --domain: 'other' reserves item k-1 for names outside the "
                             "dictionary (encode --unknown other)")
    parser.add_argument("--epsilon-perm", type=float, default=None,
                        help="longitudinal protocols (incl. allomfree): ε∞ of the permanent "
                             "round (--epsilon is ε1, one report)")
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


def parse_attributes(text: str) -> tuple[list[str], list[int]]:
    """``name:k,...`` or ``k,...`` → (names, domain sizes); names default to a1, a2, ..."""
    names, domains = [], []
    for i, part in enumerate(p.strip() for p in str(text).split(",")):
        name, sep, size = part.rpartition(":")
        if not sep:
            name = f"a{i + 1}"
        try:
            k = int(size)
        except ValueError:
            raise ValueError(f"attributes: expected name:k or k, got {part!r} in {text!r}") \
                from None
        names.append(name.strip())
        domains.append(k)
    return names, domains


def _multi_attribute_params(args) -> dict:
    """The params of a multi-attribute protocol from --attributes/--inner/--fake/--epsilon-perm."""
    if args.k is not None:
        raise ValueError("config: give either --k or --attributes, not both")
    if args.protocol == "auto":
        raise ValueError("config: --protocol auto ranks one-attribute protocols; with "
                         "--attributes use --protocol smp|spl|rsfd|allomfree and --inner auto")
    cls = get_protocol_class(args.protocol)
    if not getattr(cls, "multi_attribute", False):
        raise ValueError(f"config: --attributes needs a multi-attribute protocol (spl, smp, "
                         f"rsfd, allomfree), got {args.protocol!r}")
    names, domains = parse_attributes(args.attributes)
    params: dict = {"attributes": names, "domains": domains, "epsilon": args.epsilon}
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    for flag, name, value in (("--inner", "inner", args.inner), ("--fake", "fake", args.fake)):
        if value is None:
            continue
        if name not in fields:
            raise ValueError(f"config: {flag} does not apply to {args.protocol!r}")
        params[name] = value.split(",") if name == "inner" and "," in value else value
    return params


def _single_attribute_flags(args) -> None:
    if args.k is None:
        raise ValueError("config: --k is required (or --attributes for a multi-attribute "
                         "protocol)")
    for flag, value in (("--inner", args.inner), ("--fake", args.fake)):
        if value is not None:
            raise ValueError(f"config: {flag} needs --attributes (multi-attribute protocols)")


def build_config(args) -> CollectionConfig:
    """CollectionConfig from parsed --protocol/--k/--epsilon/--moduli/--param flags (or
    --attributes/--inner/--fake for multi-attribute protocols).

    Refuses (``ValueError``) reports above ``--max-report-bytes`` before planning or allocating:
    for MSS without moduli, first against ``planner.min_payload_bytes`` (O(1)), then exactly."""
    for name in ("attributes", "inner", "fake", "epsilon_perm", "domain"):
        if not hasattr(args, name):
            setattr(args, name, None)
    domain = None
    if args.domain is not None:
        from privfreq.protocols.domain import Domain
        if args.attributes is not None:
            raise ValueError("config: --domain names one attribute's items; it does not combine "
                             "with --attributes")
        domain = Domain.load(args.domain, other=getattr(args, "unknown", "error") == "other")
        if args.k is not None and args.k != domain.k:
            raise ValueError(f"config: --k {args.k} differs from the {domain.k} items of "
                             f"--domain {args.domain!r}; drop --k")
        args.k = domain.k
    if args.epsilon_perm is not None:
        args.param = [*args.param, f"epsilon_perm={args.epsilon_perm}"]
        args.epsilon_perm = None
    if args.attributes is not None:
        params = _multi_attribute_params(args)
        for text in args.param:
            name, value = _parse_param(text)
            params[name] = value
        config = CollectionConfig(args.protocol, params)
        values, mean_bytes, max_bytes = report_size(config.protocol)
        args.k = config.protocol.k
        _size_limit(args, args.protocol, mean_bytes,
                    f"{values:,} values (largest block {max_bytes:,} bytes)")
        return config
    _single_attribute_flags(args)
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
    config = CollectionConfig(args.protocol, params,
                              domain=None if domain is None else domain.to_dict())
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
    proto = config.protocol
    privacy = getattr(proto, "privacy_kind", "pure")
    tuple_eps = (f" epsilon={proto.epsilon:g} tuple_epsilon={proto.tuple_epsilon:.4g}"
                 if getattr(proto, "multi_attribute", False) else "")
    print(f"{args.output}: protocol={config.protocol_id} fingerprint={config.fingerprint} "
          f"params={json.dumps(config.to_dict()['params'])} privacy={privacy}{tuple_eps}")
    if getattr(proto, "multi_attribute", False) and proto.tuple_epsilon > proto.epsilon:
        logging.warning("config: %s's ε = %g holds only between tuples that differ in one "
                        "attribute of equal domain size; between arbitrary tuples it is "
                        "ε′ = %.4g", config.protocol_id, proto.epsilon, proto.tuple_epsilon)
    if privacy == "computational":
        logging.warning("config: %s reports are PRG seeds: privacy is computational (ε-LDP only "
                        "against an adversary who cannot break the PRG)", config.protocol_id)
    return config


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
