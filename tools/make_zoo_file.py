#!/usr/bin/env python
"""Write a compact model-zoo file (float16 weights + how they were made) from a checkpoint.

    python tools/make_zoo_file.py --config-file configs/mask_rcnn_R18_T1_FPN1_realct_cpu.yaml \\
        --checkpoint output/.../model_final.pth --output ct_lesion_d2/zoo_files/<name>.pth \\
        --record minutes=58 machine="2 CPU cores" -- MODEL.KEY VALUE ...

(``--`` ends the ``--record`` facts before config overrides.)

Prints the file's sha256 for ``ZOO_MODELS`` (ct_lesion_d2/model_zoo.py) and docs/MODEL_ZOO.md.
"""

import argparse
import sys

from ct_lesion_d2.model_zoo import get_config, write_zoo_file


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True, help="the config the model trained with")
    parser.add_argument("--checkpoint", required=True, help="model_*.pth written by training")
    parser.add_argument("--output", required=True, help="new zoo file (never replaced)")
    parser.add_argument(
        "--record",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="facts stored in the file (minutes, machine, date...)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    bad = [item for item in args.record if "=" not in item]
    if bad:
        sys.exit(
            f"error: --record takes KEY=VALUE facts, not {bad[0]!r} (end them with -- "
            "before config overrides)"
        )
    record = dict(item.split("=", 1) for item in args.record)
    opts = args.opts[1:] if args.opts[:1] == ["--"] else args.opts
    try:
        digest = write_zoo_file(
            args.checkpoint, args.output, get_config(args.config_file, opts), **record
        )
    except (FileExistsError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(f"{args.output}: sha256 {digest}")


if __name__ == "__main__":
    main()
