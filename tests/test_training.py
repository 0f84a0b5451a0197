"""A few iterations of real training through DefaultTrainer on real CT slices."""
import os
import shutil

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from ct_lesion_d2.data.converters import convert_layout
from ct_lesion_d2.data.datasets import register_ct_lesion_coco
from ct_lesion_d2.engine import CTLesionTrainer
from ct_lesion_d2.model_zoo import get_config

NAME = "ct_lesion_test_medseg_few"


@pytest.fixture
def few_real_slices(shared_data, tmp_path):
    source = tmp_path / "src"
    for sub in ("images", "masks"):
        os.makedirs(source / sub)
        for stem in ("medseg_000", "medseg_001", "medseg_002", "medseg_003"):
            shutil.copy(os.path.join(shared_data, "medseg100", sub, stem + ".png"), source / sub)
    outputs = convert_layout("binary-folder", str(source), str(tmp_path / "coco"), val_fraction=0)
    register_ct_lesion_coco(NAME, outputs["train"], ["Lesion"])
    yield
    DatasetCatalog.pop(NAME)
    MetadataCatalog.pop(NAME)


def test_loss_goes_down_on_real_slices(few_real_slices, tmp_path):
    cfg = get_config(
        "mask_rcnn_R18_T1_FPN1_medseg100_cpu.yaml",
        [
            "MODEL.DEVICE", "cpu", "SEED", "0", "OUTPUT_DIR", str(tmp_path / "out"),
            "DATASETS.TRAIN", f"('{NAME}',)", "DATASETS.TEST", "()",
            "DATALOADER.NUM_WORKERS", "0", "INPUT.MIN_SIZE_TRAIN", "(256,)",
            "INPUT.MAX_SIZE_TRAIN", "256", "SOLVER.MAX_ITER", "30", "SOLVER.WARMUP_ITERS", "5",
            "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", "1000", "TEST.EVAL_PERIOD", "0",
        ],
    )
    trainer = CTLesionTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 30 and np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert os.path.isfile(tmp_path / "out" / "model_final.pth")
