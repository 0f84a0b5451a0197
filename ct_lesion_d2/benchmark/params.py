"""Count parameters of every model variant beside the paper's Table 1 and the reference arithmetic
(docs/PAPER.md, section 4).

Segmentation rows add the torchvision background slots of the box and mask predictors (645
elements), classifier rows those of the box predictor only (516: no mask head).

The command line of ``tools/count_params.py``:

    python tools/count_params.py          # Markdown table
    python tools/count_params.py --json   # one JSON object per model
"""

import argparse
import json

from detectron2.modeling import build_model

from ..model_zoo import (
    CLASSIFIER_VARIANTS,
    SEGMENTATION_VARIANTS,
    TORCHVISION_CLASSIFIER_EXTRA,
    TORCHVISION_PREDICTOR_EXTRA,
    get_config,
)
from .measure import count


def rows():
    """One dict per variant, segmentation models first; None where docs/PAPER.md, section 4,
    gives no figure."""
    groups = (
        (SEGMENTATION_VARIANTS, TORCHVISION_PREDICTOR_EXTRA),
        (CLASSIFIER_VARIANTS, TORCHVISION_CLASSIFIER_EXTRA),
    )
    for variants, extra in groups:
        for name, (_, paper, reference) in variants.items():
            model = build_model(get_config(name, ["MODEL.DEVICE", "cpu"]))
            row = {"model": name, **count(model)}
            row["paper"] = None if paper is None else paper * 1e6
            row["paper_millions"] = paper
            row["spec_reference"] = reference
            row["torchvision_equivalent"] = row["state_dict_elements"] + extra
            yield row


def _fmt(value, spec):
    """Format ``value`` with ``spec``, or an em dash when it is None."""
    return "—" if value is None else format(value, spec)


def markdown(table):
    lines = [
        "| model | params | trainable | state-dict elements | + predictor bg slots | "
        "reference arithmetic | difference | paper Table 1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        reference = r["spec_reference"]
        diff = None if reference is None else (r["torchvision_equivalent"] - reference) / reference
        paper = None if r["paper_millions"] is None else f"{r['paper_millions']:.2f}M"
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['trainable']:,} | "
            f"{r['state_dict_elements']:,} | {r['torchvision_equivalent']:,} | "
            f"{_fmt(reference, ',')} | {_fmt(diff, '+.4%')} | {_fmt(paper, '')} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print a JSON list instead")
    args = parser.parse_args(argv)
    table = list(rows())
    print(json.dumps(table, indent=1) if args.json else markdown(table))
