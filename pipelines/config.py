"""Write a collection config (protocol id + params + schema version, with its fingerprint).

    privfreq config --protocol mss --k 1024 --epsilon 1 --output config.json
    privfreq config --protocol mss --k 1024 --epsilon 1 --moduli 991,1009 --param ridge=0 \\
        --output config.json

MSS without ``--moduli`` takes the planner's best candidate (``protocols.planner.plan``).
Invalid parameters fail with a ``ValueError`` naming the field and its valid range.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile

from privfreq.protocols.config import CollectionConfig


def add_protocol_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", required=True, help="protocol id (mss, ss, grr, ...)")
    parser.add_argument("--k", type=int, required=True, help="universe size")
    parser.add_argument("--epsilon", type=float, required=True, help="privacy budget (> 0)")
    parser.add_argument("--moduli", default=None, help="MSS moduli, comma-separated: a,b,c")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="extra protocol parameter (value parsed as JSON, else a string); "
                             "repeatable")


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


def build_config(args) -> CollectionConfig:
    """CollectionConfig from parsed --protocol/--k/--epsilon/--moduli/--param flags."""
    params: dict = {"k": args.k, "epsilon": args.epsilon}
    for text in args.param:
        name, value = _parse_param(text)
        if name in params or name == "moduli":
            raise ValueError(f"param: {name!r} has its own flag (--{name}); do not pass it with "
                             f"--param")
        params[name] = value
    if args.moduli is not None:
        params["moduli"] = parse_moduli(args.moduli)
    elif args.protocol == "mss":
        from privfreq.protocols.planner import plan
        best = plan(args.k, args.epsilon, top=1)[0]
        logging.info("config: planner chose moduli %s (bits %.1f, MSE ratio to SS %.3f)",
                     list(best.moduli), best.bits, best.mse_ratio_ss)
        params["moduli"] = list(best.moduli)
    return CollectionConfig(args.protocol, params)


def save_atomic(config: CollectionConfig, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".json", dir=directory)
    os.close(fd)
    try:
        config.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def run(argv=None, save_main_session=True):
    parser = argparse.ArgumentParser(prog="privfreq config", description=__doc__.split("\n")[0])
    add_protocol_args(parser)
    parser.add_argument("--output", required=True, help="where to write the config JSON")
    args = parser.parse_args(argv)
    config = build_config(args)
    save_atomic(config, args.output)
    print(f"{args.output}: protocol={config.protocol_id} fingerprint={config.fingerprint} "
          f"params={json.dumps(config.to_dict()['params'])}")
    return config


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
