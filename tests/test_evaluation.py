"""COCOEvaluator, as the trainer builds it, on a tiny set whose AP is known by hand."""

from functools import partial

import coco_cases  # tests/, on sys.path under pytest
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from ct_lesion_d2.engine import CTLesionTrainer
from ct_lesion_d2.model_zoo import get_config

SIZE = 64


square = partial(coco_cases.square, (SIZE, SIZE))
record = partial(coco_cases.coco_record, size=(SIZE, SIZE))
prediction = partial(coco_cases.instance_prediction, size=(SIZE, SIZE))


@pytest.fixture
def tiny_dataset(tmp_path):
    name = "ct_lesion_test_tiny_eval"
    lesion = square(10, 10, 20)
    DatasetCatalog.register(name, lambda: [record(1, [lesion]), record(2, [])])
    MetadataCatalog.get(name).set(thing_classes=["Lesion"])
    yield name, lesion, str(tmp_path)
    DatasetCatalog.pop(name)
    MetadataCatalog.pop(name)


def evaluate(name, output_dir, predictions):
    cfg = get_config("mask_rcnn_R18_T1", ["OUTPUT_DIR", output_dir])
    evaluator = CTLesionTrainer.build_evaluator(cfg, name)
    evaluator.reset()
    for image_id, pred in predictions.items():
        evaluator.process([{"image_id": image_id, "height": SIZE, "width": SIZE}], [pred])
    return evaluator.evaluate()


def test_perfect_prediction_has_ap_100(tiny_dataset):
    name, lesion, out = tiny_dataset
    res = evaluate(name, out, {1: prediction([lesion], [0.9]), 2: prediction([], [])})
    for task in ("bbox", "segm"):
        assert res[task]["AP"] == pytest.approx(100.0)
        assert res[task]["AP50"] == pytest.approx(100.0)


def test_false_positive_ranked_first_halves_ap(tiny_dataset):
    # Ranked list: FP (0.9) then TP (0.8): precision 1/2 at recall 1, so every interpolated
    # precision on COCO's 101 recall points is 0.5 and AP = 50 at every IoU threshold.
    name, lesion, out = tiny_dataset
    fp = square(40, 40, 10)
    res = evaluate(name, out, {1: prediction([lesion], [0.8]), 2: prediction([fp], [0.9])})
    for task in ("bbox", "segm"):
        for key in ("AP", "AP50", "AP75"):
            assert res[task][key] == pytest.approx(50.0)
