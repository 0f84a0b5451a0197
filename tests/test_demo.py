"""`make demo` (tools/demo.py), both stages, on a handful of synthetic slices."""

import json
import os

import pytest
from detectron2.data import DatasetCatalog

from ct_lesion_d2 import demo
from ct_lesion_d2.model_zoo import DEFAULT_ZOO_MODEL


def test_demo_runs_both_stages_and_prints_the_confusion_matrix(tmp_path, capsys):
    output = tmp_path / "demo"
    results = demo.main(
        [
            "--output",
            str(output),
            "--num-slices",
            "15",
            "--max-iter",
            "2",
            "--classifier-iter",
            "20",
            "MODEL.DEVICE",
            "cpu",
        ]
    )
    printed = capsys.readouterr().out
    assert "demo segm" in printed
    assert "confusion matrix (rows true, columns predicted):" in printed
    for name in ("Control", "Common Pneumonia", "COVID-19"):
        assert name in printed
    val = output / "classifier" / "inference" / "ct_demo_cls_val"
    assert (val / "confusion_matrix.png").is_file()
    assert (output / "classifier" / "model_final.pth").is_file()
    assert len(os.listdir(output / "panels")) > 0
    # the classification split is the segmentation split
    seg_val = {d["file_name"] for d in DatasetCatalog.get("ct_lesion_demo_val")}
    cls_val = {d["file_name"] for d in DatasetCatalog.get("ct_demo_cls_val")}
    assert cls_val == seg_val
    # the accuracy printed is the confusion matrix's, over every validation slice
    matrix = json.loads((val / "classification_metrics.json").read_text())["confusion_matrix"]
    assert sum(map(sum, matrix)) == len(seg_val)
    accuracy = 100.0 * sum(matrix[i][i] for i in range(len(matrix))) / len(seg_val)
    assert results["classification"]["accuracy"] == pytest.approx(accuracy)
    assert f"accuracy {accuracy:.1f}" in printed
    # the zoo model's report on the real slice that ships with the project
    report = json.loads(open(results["real_slice_report"]).read())
    card = report["settings"]["model_card"]
    assert card["name"] == DEFAULT_ZOO_MODEL and card["zoo_model"]
    assert card["training_data"] == ["ct_lesion_medseg100_train", "ct_lesion_covid19_ct_seg_train"]
    assert report["summary"]["lesion_count"] >= 1  # the slice shows bilateral ground glass
    assert os.path.isfile(
        os.path.join(os.path.dirname(results["real_slice_report"]), "report.html")
    )
    assert "demo real slice" in printed


def test_demo_refuses_a_non_empty_output(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(SystemExit, match="--overwrite"):
        demo.main(["--output", str(tmp_path)])
