#!/usr/bin/env python
"""Check a dataset before training on it; prints a summary table and every bad file once.

    python tools/validate_dataset.py datasets ct_lesion_cncb_train ct_lesion_cncb_val
    python tools/validate_dataset.py coco $DETECTRON2_DATASETS/cncb/annotations/*.json
    python tools/validate_dataset.py layout cncb /data/ct_lesion_seg
    python tools/validate_dataset.py covidx $DETECTRON2_DATASETS/COVIDx-CT

``datasets`` takes registered names (lesion or classification datasets), ``coco`` converted
annotation files (one split each), ``layout`` a source folder before conversion, ``covidx`` the
COVIDx-CT split files. Checks: every image readable and of its declared size, mask sizes and
values, boxes inside the image, polygons of 3 points or more, no empty masks, no dangling
annotations, no file (or copy of one) and no scan, patient or source document in two splits;
the table counts images, instances or classes per split. Exits 1 when there are errors.
"""

import argparse
import logging
import sys

from ct_lesion_d2.data.converters import LAYOUTS
from ct_lesion_d2.data.validation import (
    validate_coco_files,
    validate_covidx,
    validate_datasets,
    validate_layout,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--no-decode", action="store_true", help="skip decoding the images (only the cheap checks)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    sub = parser.add_subparsers(dest="kind", required=True)
    sub.add_parser("datasets", help="registered dataset names").add_argument("names", nargs="+")
    sub.add_parser("coco", help="converted COCO JSON files").add_argument("files", nargs="+")
    layout = sub.add_parser("layout", help="a source folder before conversion")
    layout.add_argument("layout", choices=sorted(LAYOUTS))
    layout.add_argument("folder")
    sub.add_parser("covidx", help="the COVIDx-CT folder").add_argument("folder")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    decode, progress = not args.no_decode, not args.no_progress
    if args.kind == "datasets":
        import ct_lesion_d2  # noqa: F401  (registers the built-in datasets)

        report = validate_datasets(args.names, decode, progress)
    elif args.kind == "coco":
        report = validate_coco_files(args.files, decode, progress)
    elif args.kind == "layout":
        report = validate_layout(args.layout, args.folder, progress)
    else:
        report = validate_covidx(args.folder, decode, progress)
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
