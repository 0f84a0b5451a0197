#!/usr/bin/env python
"""Convert a CT lesion dataset to COCO instance JSON for ``DatasetCatalog``.

    python tools/convert_dataset.py cncb /data/ct_lesion_seg --output $DETECTRON2_DATASETS/cncb
    python tools/convert_dataset.py binary-folder ../shared/data/medseg100 \\
        --output $DETECTRON2_DATASETS/medseg100
    python tools/convert_dataset.py medseg-multiclass ../shared/data/medseg_multiclass --separate \\
        --output $DETECTRON2_DATASETS/medseg_multiclass_sep
    python tools/convert_dataset.py synthetic --num-slices 60 \\
        --output $DETECTRON2_DATASETS/synthetic

Writes ``<output>/annotations/{train,val}.json`` (split by scan for CNCB, by file otherwise);
existing output is never replaced without ``--overwrite``.
"""

import argparse
import logging
import os
import sys

from ct_lesion_d2.data import DatasetFormatError
from ct_lesion_d2.data.converters import LAYOUTS, convert_layout
from ct_lesion_d2.utils.files import refuse_existing


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("layout", choices=sorted(LAYOUTS) + ["synthetic"])
    parser.add_argument("input", nargs="?", help="dataset folder (not used for synthetic)")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--separate", action="store_true", help="keep GGO and consolidation apart")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-area", type=int, default=100, help="drop components <= this")
    parser.add_argument("--num-slices", type=int, default=60, help="synthetic slices to generate")
    parser.add_argument("--size", type=int, default=256, help="synthetic slice size")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    layout, source = args.layout, args.input
    if layout != "synthetic" and source is None:
        sys.exit(f"{layout}: give the dataset folder")
    try:
        if layout == "synthetic":
            from ct_lesion_d2.data.synthetic import generate_synthetic_slices

            # refuse before any slice is drawn
            refuse_existing(
                [
                    os.path.join(args.output, "annotations", f"{split}.json")
                    for split in ("train", "val")
                ],
                args.overwrite,
            )
            source = os.path.join(args.output, "slices")
            generate_synthetic_slices(
                source, args.num_slices, seed=args.seed, size=args.size, overwrite=args.overwrite
            )
            layout = "two-label-folder"
        outputs = convert_layout(
            layout,
            source,
            args.output,
            separate=args.separate,
            val_fraction=args.val_fraction,
            seed=args.seed,
            min_area=args.min_area,
            overwrite=args.overwrite,
        )
    except (DatasetFormatError, FileExistsError, ValueError) as e:
        sys.exit(f"error: {e}")
    for split, path in outputs.items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()
