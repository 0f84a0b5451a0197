#!/usr/bin/env python
"""Count parameters of every model variant beside the paper's Table 1 and the SPEC arithmetic.

    python tools/count_params.py          # Markdown table
    python tools/count_params.py --json   # one JSON object per model
"""
import argparse
import json

from detectron2.modeling import build_model

from ct_lesion_d2.model_zoo import SEGMENTATION_VARIANTS, TORCHVISION_PREDICTOR_EXTRA, get_config


def count(model):
    """Parameters, trainable parameters and state-dict elements (BatchNorm buffers included)."""
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "state_dict_elements": sum(t.numel() for t in model.state_dict().values()),
    }


def rows():
    for name, (_, paper, reference) in SEGMENTATION_VARIANTS.items():
        model = build_model(get_config(name, ["MODEL.DEVICE", "cpu"]))
        row = {"model": name, **count(model), "paper": paper * 1e6, "paper_millions": paper}
        row["spec_reference"] = reference
        row["torchvision_equivalent"] = row["state_dict_elements"] + TORCHVISION_PREDICTOR_EXTRA
        yield row


def markdown(table):
    lines = [
        "| model | params | trainable | state-dict elements | + predictor bg slots | "
        "SPEC 4 arithmetic | difference | paper Table 1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        diff = (r["torchvision_equivalent"] - r["spec_reference"]) / r["spec_reference"]
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['trainable']:,} | "
            f"{r['state_dict_elements']:,} | {r['torchvision_equivalent']:,} | "
            f"{r['spec_reference']:,} | {diff:+.4%} | {r['paper'] / 1e6:.2f}M |"
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
