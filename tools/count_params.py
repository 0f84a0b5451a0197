#!/usr/bin/env python
"""Count parameters of every model variant beside the paper's Table 1 and the SPEC arithmetic.

Segmentation rows add the torchvision background slots of the box and mask predictors (645
elements), classifier rows those of the box predictor only (516: no mask head).

    python tools/count_params.py          # Markdown table
    python tools/count_params.py --json   # one JSON object per model
"""
import argparse
import json

from detectron2.modeling import build_model

from ct_lesion_d2.model_zoo import (
    CLASSIFIER_VARIANTS,
    SEGMENTATION_VARIANTS,
    TORCHVISION_CLASSIFIER_EXTRA,
    TORCHVISION_PREDICTOR_EXTRA,
    get_config,
)


def count(model):
    """Parameters, trainable parameters and state-dict elements (BatchNorm buffers included)."""
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "state_dict_elements": sum(t.numel() for t in model.state_dict().values()),
    }


def rows():
    """One dict per variant, segmentation models first; None where SPEC 4 gives no figure."""
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
        "SPEC 4 arithmetic | difference | paper Table 1 |",
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print a JSON list instead")
    args = parser.parse_args()
    table = list(rows())
    print(json.dumps(table, indent=1) if args.json else markdown(table))


if __name__ == "__main__":
    main()
