"""The differences between the official Detectron2 and pb1-detectron2 0.6 that
``ct_lesion_d2/utils/compat.py`` lists, one test each, on whichever build is installed."""

import importlib
import inspect
from functools import partial

import coco_cases  # tests/, on sys.path under pytest
import pytest
import torch
import torch.utils.data as torchdata
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.samplers import TrainingSampler
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm

from ct_lesion_d2.data.build import ResumableTrainLoader
from ct_lesion_d2.data.samplers import ResumableBatchSampler
from ct_lesion_d2.engine import CTLesionTrainer
from ct_lesion_d2.model_zoo import get_config
from ct_lesion_d2.utils import compat

SIZE = 48


# -------------------------------------------------------------------- 1. compiled operators


def test_compiled_ops_flag_matches_detectron2_C():
    import detectron2._C as C

    assert compat.HAS_COMPILED_OPS == (not getattr(C, "IS_PLACEHOLDER", False))
    assert ("placeholder" in C.get_compiler_version()) != compat.HAS_COMPILED_OPS


_square = partial(coco_cases.square, (SIZE, SIZE))
_record = partial(coco_cases.coco_record, size=(SIZE, SIZE))
_prediction = partial(coco_cases.instance_prediction, size=(SIZE, SIZE))


@pytest.fixture
def small_eval_set():
    """Three images, four lesions; predictions with a miss, a duplicate, a poor overlap and a
    false positive, so that AP is neither 0 nor 100."""
    name = "ct_lesion_test_compat_eval"
    gt = {
        1: [_square(4, 4, 12), _square(28, 26, 10)],
        2: [_square(10, 20, 16)],
        3: [_square(30, 5, 8)],
    }
    DatasetCatalog.register(name, lambda: [_record(i, m) for i, m in gt.items()])
    MetadataCatalog.get(name).set(thing_classes=["Lesion"])
    predictions = {
        1: _prediction(
            [_square(4, 4, 12), _square(5, 5, 12), _square(30, 28, 10)], [0.9, 0.8, 0.4]
        ),
        2: _prediction([_square(12, 22, 16), _square(0, 0, 6)], [0.7, 0.95]),
        3: _prediction([_square(20, 30, 8)], [0.3]),
    }
    yield name, predictions
    DatasetCatalog.pop(name)
    MetadataCatalog.pop(name)


def _evaluate(name, predictions, fast, output_dir):
    evaluator = COCOEvaluator(name, output_dir=output_dir, use_fast_impl=fast)
    evaluator.reset()
    for image_id, pred in predictions.items():
        evaluator.process([{"image_id": image_id, "height": SIZE, "width": SIZE}], [pred])
    return evaluator.evaluate()


def test_fast_and_python_coco_ap_agree(small_eval_set, tmp_path):
    if not compat.HAS_COMPILED_OPS:
        pytest.skip("detectron2._C is the placeholder: no fast COCO evaluation")
    name, predictions = small_eval_set
    python = _evaluate(name, predictions, False, str(tmp_path / "python"))
    fast = _evaluate(name, predictions, True, str(tmp_path / "fast"))
    assert 0 < python["segm"]["AP"] < 100 and 0 < python["bbox"]["AP"] < 100
    for task in ("bbox", "segm"):
        for metric, value in python[task].items():
            assert fast[task][metric] == pytest.approx(value, abs=1e-6, nan_ok=True), (task, metric)


def test_trainer_evaluator_uses_the_fast_path_where_compiled(small_eval_set, tmp_path, monkeypatch):
    import detectron2.evaluation.coco_evaluation as coco_evaluation

    made = []

    class Spy(coco_evaluation.COCOeval_opt):
        def __init__(self, *args, **kwargs):
            made.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(coco_evaluation, "COCOeval_opt", Spy)
    name, predictions = small_eval_set
    cfg = get_config("mask_rcnn_R18_T1", ["OUTPUT_DIR", str(tmp_path)])
    evaluator = CTLesionTrainer.build_evaluator(cfg, name)
    evaluator.reset()
    for image_id, pred in predictions.items():
        evaluator.process([{"image_id": image_id, "height": SIZE, "width": SIZE}], [pred])
    assert 0 < evaluator.evaluate()["segm"]["AP"] < 100
    assert bool(made) == compat.HAS_COMPILED_OPS


# --------------------------------------------------------- 2. optimizer state in checkpoints


def test_checkpoints_hold_the_optimizer_in_one_layout(tmp_path):
    from detectron2.engine import DefaultTrainer

    assert compat.TRAINER_SAVES_OPTIMIZER == ("state_dict" in vars(DefaultTrainer))
    name = "ct_lesion_test_compat_train"
    DatasetCatalog.register(name, lambda: [_record(1, [_square(4, 4, 12)])])
    MetadataCatalog.get(name).set(thing_classes=["Lesion"])
    try:
        cfg = get_config(
            "mask_rcnn_R18_T1",
            [
                "MODEL.DEVICE",
                "cpu",
                "OUTPUT_DIR",
                str(tmp_path),
                "DATASETS.TRAIN",
                f"('{name}',)",
                "DATASETS.TEST",
                "()",
                "SEED",
                "0",
                "DATALOADER.NUM_WORKERS",
                "0",
                "SOLVER.IMS_PER_BATCH",
                "1",
            ],
        )
        trainer = CTLesionTrainer(cfg)
        state = trainer.state_dict()
        assert "optimizer" in state["_trainer"]
        # what the saved optimizer state holds comes back through load_state_dict
        group = state["_trainer"]["optimizer"]["param_groups"][0]
        group["lr"] = 0.123
        trainer.load_state_dict(state)
        assert trainer.optimizer.param_groups[0]["lr"] == 0.123
    finally:
        DatasetCatalog.pop(name)
        MetadataCatalog.pop(name)


# ---------------------------------------------------------------- 3. several CPU processes


def test_launch_on_cpu_flag_matches_launch():
    source = inspect.getsource(importlib.import_module("detectron2.engine.launch"))
    assert compat.LAUNCH_ON_CPU == ("GLOO" in source)
    if not compat.LAUNCH_ON_CPU:
        assert "cuda is not available" in source  # 0.6 asserts CUDA in each worker
    assert "official" in compat.detectron2_build() or not compat.LAUNCH_ON_CPU


# ----------------------------------------------------------- 4. DDP of a CPU model


@pytest.fixture
def single_process_group(tmp_path, monkeypatch):
    """A GLOO group of one process, reported as two by Detectron2's comm, so that
    create_ddp_model does wrap the model."""
    store = torch.distributed.FileStore(str(tmp_path / "store"), 1)
    torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(comm, "get_local_rank", lambda: 0)
    yield
    torch.distributed.destroy_process_group()


def test_create_ddp_model_of_a_cpu_model_needs_cpu_ddp(single_process_group):
    import detectron2.engine.defaults as d2_defaults

    with pytest.raises(ValueError, match="device_ids"):
        d2_defaults.create_ddp_model(torch.nn.Linear(2, 2))
    with compat.cpu_ddp():
        ddp = d2_defaults.create_ddp_model(torch.nn.Linear(2, 2), broadcast_buffers=False)
    assert isinstance(ddp, torch.nn.parallel.DistributedDataParallel)
    assert d2_defaults.create_ddp_model is not compat._create_cpu_ddp_model  # restored


# ------------------------------------------------- 5. the training loader's iterator


class _Keys(torchdata.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, key):
        return key


def test_loader_iterator_taken_before_set_start_iter_starts_there():
    def loader():
        sampler = ResumableBatchSampler(TrainingSampler(10, seed=3), 2)
        return ResumableTrainLoader(_Keys(), sampler, num_workers=0, seed=3)

    reference = loader()
    batches = [b for _, b in zip(range(5), reference)]
    # 0.6's SimpleTrainer takes iter() in its constructor, before resume_or_load
    early = loader()
    iterator = iter(early)
    early.set_start_iter(3)
    assert next(iterator) == batches[3]
