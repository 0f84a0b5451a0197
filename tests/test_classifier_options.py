"""The classifier options beyond the paper (MODEL.CT_CLASSIFIER): RoI head features, lesion
burden, global features, the image branch and augmented views in the RoI cache; and the paper's
S left as it was."""

import logging

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import hooks
from detectron2.modeling import build_model
from detectron2.utils.env import seed_all_rng
from tiny_opts import TINY_CLASSIFIER  # tests/, on sys.path under pytest

from ct_lesion_d2.data.datasets import register_ct_classification
from ct_lesion_d2.data.synthetic import generate_synthetic_slices
from ct_lesion_d2.engine import CTLesionTrainer
from ct_lesion_d2.export import (
    ExportedClassifier,
    ExportError,
    compare_classification,
    export_classifier,
)
from ct_lesion_d2.model_zoo import S_MODULE_REFERENCE, get_config
from ct_lesion_d2.modeling.meta_arch.image_branch import ImageBranch
from ct_lesion_d2.modeling.meta_arch.slice_features import (
    BURDEN_FEATURE_NAMES,
    SliceFeatureS,
    crude_lung_mask,
    global_average,
)
from ct_lesion_d2.solver import build_ct_optimizer

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
NAME = "ct_lesion_test_cls_options"
CLASSES = ["Control", "Common Pneumonia", "COVID-19"]
SMALL = TINY_CLASSIFIER + [
    "SOLVER.BASE_LR",
    "0.001",
    "MODEL.CT_CLASSIFIER.TRAIN_BN_AFFINE",
    "False",
    "SOLVER.IMS_PER_BATCH",
    "3",
    "SOLVER.MAX_ITER",
    "2",
    "SOLVER.CHECKPOINT_PERIOD",
    "100",
    "DATASETS.TEST",
    "()",
]
# a random detector scores near 0.5: keep its detections so that the burden sees lesions
BURDEN = [
    "MODEL.CT_CLASSIFIER.LESION_BURDEN_FEATURES",
    "True",
    "MODEL.CT_CLASSIFIER.BURDEN_SCORE_THRESH",
    "0.3",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "0.0",
    "TEST.DETECTIONS_PER_IMAGE",
    "32",
]
OPTIONS = {
    "roi_head": ["MODEL.CT_CLASSIFIER.ROI_HEAD_FEATURES", "True"],
    "burden": BURDEN,
    "global": ["MODEL.CT_CLASSIFIER.GLOBAL_FEATURES", "True"],
    "image": [
        "MODEL.CT_CLASSIFIER.IMAGE_BRANCH",
        "resnet18",
        "MODEL.CT_CLASSIFIER.IMAGE_BRANCH_SIZE",
        "64",
    ],
    "image_logits": [
        "MODEL.CT_CLASSIFIER.IMAGE_BRANCH",
        "resnet18",
        "MODEL.CT_CLASSIFIER.IMAGE_BRANCH_SIZE",
        "64",
        "MODEL.CT_CLASSIFIER.IMAGE_BRANCH_FUSION",
        "logits",
    ],
    "image_detector_backbone": [
        "MODEL.CT_CLASSIFIER.IMAGE_BRANCH",
        "detector_backbone",
        "MODEL.CT_CLASSIFIER.IMAGE_BRANCH_SIZE",
        "64",
        "MODEL.CT_CLASSIFIER.IMAGE_BRANCH_FUSION",
        "logits",
    ],
    "image_ct_resnet": [
        "MODEL.CT_CLASSIFIER.IMAGE_BRANCH",
        "ct_resnet",
        "MODEL.CT_CLASSIFIER.IMAGE_BRANCH_SIZE",
        "64",
    ],
    "all_with_views": BURDEN
    + [
        "MODEL.CT_CLASSIFIER.ROI_HEAD_FEATURES",
        "True",
        "MODEL.CT_CLASSIFIER.GLOBAL_FEATURES",
        "True",
        "MODEL.CT_CLASSIFIER.CACHE_AUGMENTED_VIEWS",
        "1",
        "INPUT.RANDOM_FLIP",
        "horizontal",
        "INPUT.CT_AUGMENTATION.ROTATION",
        "10.0",
        "INPUT.CT_AUGMENTATION.CONTRAST",
        "0.3",
    ],
}
# (rows width, cached slice features, image-branch features) per option, B = 128 and the
# R18_T1 box head's 128 features
LAYOUT = {
    "roi_head": (133, 0, 0),
    "burden": (5, 10, 0),
    "global": (5, 256, 0),
    "image": (5, 0, 512),
    "image_logits": (5, 0, 0),
    "image_detector_backbone": (5, 0, 0),
    "image_ct_resnet": (5, 0, 256),
    "all_with_views": (133, 266, 0),
}


@pytest.fixture
def synthetic_classes(tmp_path):
    slices = generate_synthetic_slices(str(tmp_path / "slices"), 6, size=128, progress=False)
    records = [
        {
            "file_name": str(tmp_path / "slices" / r["file_name"]),
            "image_id": i,
            "class_id": r["class_id"],
        }
        for i, r in enumerate(slices)
    ]
    register_ct_classification(NAME, lambda: records, CLASSES)
    yield records
    DatasetCatalog.remove(NAME)
    MetadataCatalog.remove(NAME)


@pytest.fixture(scope="module")
def segmenter_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("segmenter")
    torch.manual_seed(0)
    segmenter = build_model(get_config("mask_rcnn_R18_T1", ["MODEL.DEVICE", "cpu"]))
    DetectionCheckpointer(segmenter, save_dir=str(folder)).save("segmenter")
    return str(folder / "segmenter.pth")


def options_cfg(tmp_path, segmenter_path, option, cached=True):
    return get_config(
        "classifier_R18_T1",
        SMALL
        + OPTIONS[option]
        + [
            "MODEL.CT_CLASSIFIER.SEGMENTATION_WEIGHTS",
            segmenter_path,
            "MODEL.CT_CLASSIFIER.CACHE_ROI_BATCHES",
            str(cached),
            "DATASETS.TRAIN",
            f"('{NAME}',)",
            "OUTPUT_DIR",
            str(tmp_path / f"out_{cached}"),
        ],
    )


@pytest.mark.parametrize("option", list(OPTIONS))
def test_option_gives_the_same_s_inputs_cached_and_uncached_and_trains(
    option, synthetic_classes, segmenter_path, tmp_path
):
    trainer = CTLesionTrainer(options_cfg(tmp_path, segmenter_path, option))
    trainer.resume_or_load(resume=False)
    first = next(iter(trainer.data_loader))  # computes the cache
    cache = trainer.data_loader.roi_batch_cache
    model = trainer.model
    row_width, slice_dim, image_dim = LAYOUT[option]
    views = 2 if option == "all_with_views" else 1
    assert len(cache._records) == views * len(synthetic_classes)
    assert model.slice_feature_dim == slice_dim and model.image_feature_dim == image_dim
    # the image branch trains, so the cached records bring an image, the rest do not
    assert ("image" in first[0]) == option.startswith("image")
    # the uncached path on the same inputs (augmented views through the cache's own mapper)
    chosen = [0, 1, len(cache._records) - 1]
    inputs = [cache.mapper(cache.dataset_dicts[i]) for i in chosen]
    seen = []
    handle = model.classifier.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    model.train()
    loss_uncached = model(inputs)["loss_cls_image"]
    cached = [cache._records[i] for i in chosen]
    if option.startswith("image"):  # the image the uncached path saw (the loader's is new)
        cached = [dict(c, image=x["image"]) for c, x in zip(cached, inputs)]
    loss_cached = model(cached)["loss_cls_image"]
    handle.remove()
    assert seen[0].shape == (3, 128 * row_width + slice_dim + image_dim)
    assert torch.allclose(seen[0], seen[1], atol=1e-5)
    assert torch.allclose(loss_cached, loss_uncached, atol=1e-6)
    if slice_dim:
        assert cached[0]["slice_features"].shape == (slice_dim,)
    if option == "burden":
        burden = seen[0][:, -slice_dim:]
        assert (burden[:, BURDEN_FEATURE_NAMES.index("log1p_num_lesions")] > 0).all()
    trainer.train()
    assert trainer.iter == 2 and torch.isfinite(loss_cached)
    # and uncached training of the same option
    uncached = CTLesionTrainer(options_cfg(tmp_path, segmenter_path, option, cached=False))
    uncached.resume_or_load(resume=False)
    uncached.train()
    assert uncached.iter == 2


def test_weight_average_of_the_image_branch_classifier(synthetic_classes, segmenter_path, tmp_path):
    """SOLVER.SWA on the cached image-branch classifier: the model after training is the mean
    of the last iterates of a plain run, BatchNorm statistics of the branch included."""

    def train(name, extra):
        cfg = options_cfg(tmp_path / name, segmenter_path, "image_logits")
        cfg.defrost()
        cfg.merge_from_list(["SOLVER.MAX_ITER", "4"] + extra)
        seed_all_rng(0)  # the same initial S and branch (train_net's default_setup does this)
        trainer = CTLesionTrainer(cfg)
        trainer.resume_or_load(resume=False)
        iterates = []
        trainer.register_hooks(
            [hooks.CallbackHook(after_step=lambda t: iterates.append(copy_weights(t.model)))]
        )
        trainer.train()
        return iterates

    plain = train("plain", [])
    averaged = train("swa", ["SOLVER.SWA.ENABLED", "True", "SOLVER.SWA.START", "0.5"])
    for k, v in plain[3].items():
        if v.is_floating_point():
            mean = (plain[2][k] + v) / 2
            torch.testing.assert_close(averaged[3][k], mean, rtol=1e-5, atol=1e-6, msg=k)
        else:
            assert torch.equal(averaged[3][k], v), k
    moved = [k for k, v in plain[3].items() if not torch.equal(averaged[3][k], v)]
    assert any(k.startswith("image_branch.") and "running_mean" in k for k in moved)
    assert any(k.startswith("classifier.") for k in moved)
    assert not any(k.startswith("backbone.") for k in moved)  # the frozen detector


def test_detector_backbone_branch_starts_from_the_segmenter_and_trains_apart(
    synthetic_classes, segmenter_path, tmp_path, caplog
):
    """IMAGE_BRANCH detector_backbone: a copy of the detector's ResNet, filled from the
    segmentation checkpoint when training starts; it trains while the detector stays frozen."""
    trainer = CTLesionTrainer(options_cfg(tmp_path, segmenter_path, "image_detector_backbone"))
    trainer.resume_or_load(resume=False)
    model = trainer.model
    saved = torch.load(segmenter_path, weights_only=False)["model"]
    branch = model.image_branch.net.body.state_dict()
    assert set(branch) == {k[len("backbone.bottom_up.") :] for k in saved if "bottom_up." in k}
    for key, value in branch.items():
        assert torch.equal(value, saved[f"backbone.bottom_up.{key}"]), key
    assert model.image_feature_dim == 0 and model.image_branch.out_features == 256
    # a copy, not the detector's modules: training moves the branch alone
    detector = copy_weights(model.backbone)
    trainer.train()
    assert not all(
        torch.equal(v, saved[f"backbone.bottom_up.{k}"])
        for k, v in model.image_branch.net.body.state_dict().items()
    )
    assert all(torch.equal(v, detector[k]) for k, v in model.backbone.state_dict().items())
    # without segmentation weights the branch says that it starts random
    empty = options_cfg(tmp_path / "empty", "", "image_detector_backbone")
    with caplog.at_level(logging.WARNING, logger="ct_lesion_d2"):
        CTLesionTrainer(empty).resume_or_load(resume=False)
    assert "starts from random weights" in caplog.text
    # the control: the same architecture, not filled from the checkpoint
    control = CTLesionTrainer(options_cfg(tmp_path / "control", segmenter_path, "image_ct_resnet"))
    control.resume_or_load(resume=False)
    weights = control.model.image_branch.net.body.state_dict()
    assert set(weights) == set(branch)
    kernels = [k for k, v in weights.items() if v.dim() == 4]  # GroupNorm starts at 1 and 0
    assert kernels and not any(
        torch.equal(weights[k], saved[f"backbone.bottom_up.{k}"]) for k in kernels
    )


def copy_weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_augmented_views_are_reproducible_and_differ(synthetic_classes, segmenter_path, tmp_path):
    cfg = options_cfg(tmp_path, segmenter_path, "all_with_views")
    cfg.MODEL.CT_CLASSIFIER.CACHE_AUGMENTED_VIEWS = 2
    loader = CTLesionTrainer.build_train_loader(cfg)
    cache = loader.roi_batch_cache
    n = len(synthetic_classes)
    assert len(cache.dataset_dicts) == 3 * n
    plain = cache.mapper(cache.dataset_dicts[0])["image"]
    first, again = (cache.mapper(cache.dataset_dicts[n])["image"] for _ in range(2))
    assert torch.equal(first, again)
    assert not torch.equal(first, plain)
    assert not torch.equal(first, cache.mapper(cache.dataset_dicts[2 * n])["image"])


def test_paper_s_and_its_input_are_unchanged():
    torch.manual_seed(0)
    model = build_model(get_config("classifier_R18_T1", SMALL[:12])).eval()
    assert isinstance(model.classifier, torch.nn.Sequential)
    assert sum(p.numel() for p in model.classifier.parameters()) == S_MODULE_REFERENCE
    assert model.slice_feature_dim == 0 and not model.roi_heads.mask_on
    assert model.image_branch is None and model.image_feature_dim == 0
    assert not any(k.startswith("roi_heads.mask") for k in model.state_dict())
    image = torch.rand(3, 128, 160) * 255
    seen = []
    handle = model.classifier.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    with torch.no_grad():
        model([{"image": image}])
        batches, _ = model.detect_roi_batches([{"image": image}])
    handle.remove()
    assert batches[0].rows.shape == (128, 5)
    assert torch.equal(seen[0], batches[0].rows.reshape(1, -1))


def test_slice_feature_s_and_pooling():
    s_module = SliceFeatureS(10, 3, 8, 4, 2)
    assert s_module(torch.zeros(5, 13)).shape == (5, 2)
    feature = torch.zeros(2, 1, 4, 4)
    feature[1, :, :2, :2] = 1.0
    feature[1, :, 2:, :] = 7.0  # padding of the second image
    pooled = global_average(feature, [(64, 64), (30, 25)], 16)
    assert pooled[0, 0] == 0.0 and pooled[1, 0] == 1.0


def test_image_branch_keeps_the_aspect_ratio_and_names_its_key():
    torch.manual_seed(0)
    branch = ImageBranch("resnet18", 64, [128.0] * 3, [64.0] * 3).eval()
    assert branch.resized(torch.zeros(3, 50, 120)).shape == (3, 27, 64)
    assert branch.resized(torch.zeros(3, 300, 100)).shape == (3, 64, 21)
    with torch.no_grad():
        features = branch([torch.rand(3, 50, 120) * 255, torch.rand(3, 300, 100) * 255])
    assert features.shape == (2, 512) and torch.isfinite(features).all()
    with pytest.raises(ValueError, match="MODEL.CT_CLASSIFIER.IMAGE_BRANCH"):
        ImageBranch("vgg11", 64, [128.0] * 3, [64.0] * 3)
    with pytest.raises(ValueError, match="needs the detector's bottom-up ResNet"):
        ImageBranch("detector_backbone", 64, [128.0] * 3, [64.0] * 3)


@pytest.mark.parametrize("norm", ["FrozenBN", "GN"])
def test_detector_arch_branch_gives_a_slice_the_same_features_in_any_batch(norm):
    """The detector's ResNet normalises each sample alone, so in training a slice's features do
    not depend on the slices beside it or their shapes: what inference, slice by slice, sees."""
    torch.manual_seed(0)
    opts = SMALL[:12] + OPTIONS["image_ct_resnet"] + ["MODEL.RESNETS.NORM", norm]
    branch = build_model(get_config("classifier_R18_T1", opts)).image_branch.train()
    wide, tall = torch.rand(3, 50, 120) * 255, torch.rand(3, 300, 100) * 255
    with torch.no_grad():
        alone = branch([wide])
        beside = branch([tall, wide])
    assert alone.shape == (1, 256) and alone.abs().sum() > 0
    torch.testing.assert_close(beside[1:], alone)


@pytest.mark.parametrize("norm", ["FrozenBN", "GN"])
def test_classifier_detector_gives_a_slice_the_same_s_inputs_in_any_batch(norm):
    """The RoI rows and slice features of a slice (what the RoI cache stores, in batches of
    IMS_PER_BATCH, and inference computes one slice at a time) do not depend on the slices of
    other sizes beside it, whose padding a single detector pass would take in."""
    torch.manual_seed(0)
    opts = SMALL[:12] + BURDEN + OPTIONS["global"] + ["MODEL.RESNETS.NORM", norm]
    model = build_model(get_config("classifier_R18_T1", opts)).eval()
    wide, tall = torch.rand(3, 64, 128) * 255, torch.rand(3, 160, 96) * 255
    with torch.no_grad():
        alone = model.detect_s_inputs([{"image": wide}])
        beside = model.detect_s_inputs([{"image": tall}, {"image": wide}, {"image": tall}])
    assert [tuple(s) for s in beside[1]] == [(160, 96), (64, 128), (160, 96)]
    assert alone[0][0].num_detections > 0 and alone[2].shape[0] == 1
    torch.testing.assert_close(beside[0][1].rows, alone[0][0].rows)
    torch.testing.assert_close(beside[0][2].rows, beside[0][0].rows)
    torch.testing.assert_close(beside[2][1:2], alone[2])
    torch.testing.assert_close(beside[2][2], beside[2][0])


def test_image_branch_learns_at_its_own_rate():
    opts = SMALL[:12] + OPTIONS["image"] + ["MODEL.CT_CLASSIFIER.IMAGE_BRANCH_LR_FACTOR", "100.0"]
    cfg = get_config("classifier_R18_T1", opts)
    model = build_model(cfg)
    optimizer = build_ct_optimizer(cfg, model)
    rate = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert len(rate) == len(trainable)
    for name, p in trainable:
        expected = cfg.SOLVER.BASE_LR * (100 if name.startswith("image_branch.") else 1)
        assert rate[id(p)] == pytest.approx(expected), name
    assert any(n.startswith("image_branch.") for n, _ in trainable)
    assert any(n.startswith("classifier.") for n, _ in trainable)


def test_crude_lung_mask_finds_dark_lungs_inside_a_bright_body():
    grey = torch.zeros(100, 100, dtype=torch.uint8).numpy()
    grey[10:90, 10:90] = 200  # body
    grey[30:70, 20:45] = 40  # a lung
    lung = crude_lung_mask(grey)
    assert lung[50, 30] and not lung[5, 5] and not lung[50, 80]
    assert lung.sum() == 40 * 25


def test_export_carries_roi_head_features_and_refuses_slice_features(tmp_path):
    opts = SMALL[:12] + [
        "MODEL.CT_CLASSIFIER.BATCH_DETECTIONS",
        "16",
        "MODEL.CT_CLASSIFIER.ROI_HEAD_FEATURES",
        "True",
    ]
    torch.manual_seed(0)
    model = build_model(get_config("classifier_R18_T1", opts)).eval()
    image = torch.rand(3, 120, 150) * 255
    export_classifier(model, image, "torchscript", str(tmp_path / "cls"))
    exported = ExportedClassifier(str(tmp_path / "cls"), "torchscript")
    with torch.no_grad():
        reference = model([{"image": image}])[0]
    result = compare_classification(reference, exported([{"image": image}])[0])
    assert result["ok"], result
    refused = (
        ("LESION_BURDEN_FEATURES", BURDEN),
        ("GLOBAL_FEATURES", OPTIONS["global"]),
        ("IMAGE_BRANCH", OPTIONS["image"]),
    )
    for key, extra in refused:
        other = build_model(get_config("classifier_R18_T1", opts + extra)).eval()
        with pytest.raises(ExportError, match=f"MODEL.CT_CLASSIFIER.{key}"):
            export_classifier(other, image, "torchscript", str(tmp_path / key))


@pytest.mark.parametrize(
    "name",
    [
        "classifier_R18_T1_ucsd_realct_cpu.yaml",
        "classifier_R18_T1_ucsd_realct_features_cpu.yaml",
        "classifier_R18_T1_ucsd_realct_image_cpu.yaml",
        "classifier_R18_T1_ucsd_realct_image_swa_cpu.yaml",
        "classifier_R18_T1_ucsd_realct_detector_backbone_swa_cpu.yaml",
    ],
)
def test_realct_classifiers_take_every_key_of_their_segmenter(name):
    cfg = get_config(name, ["MODEL.DEVICE", "cpu"])
    twin = get_config("mask_rcnn_R18_T1_FPN1_realct_cpu.yaml", ["MODEL.DEVICE", "cpu"])
    for key in ("RESNETS", "CT_BACKBONE", "FPN", "ANCHOR_GENERATOR", "RPN", "ROI_BOX_HEAD"):
        assert cfg.MODEL[key] == twin.MODEL[key], key
    for key in ("NMS_THRESH_TEST", "SCORE_THRESH_TEST", "IN_FEATURES"):
        assert cfg.MODEL.ROI_HEADS[key] == twin.MODEL.ROI_HEADS[key], key
    classifier = build_model(cfg).state_dict()
    segmenter = build_model(twin).state_dict()
    trained = ("classifier.", "image_branch.")  # module S and the image branch, not loaded
    detector = [k for k in classifier if not k.startswith(trained)]
    assert all(classifier[k].shape == segmenter[k].shape for k in detector)
    assert cfg.MODEL.CT_CLASSIFIER.CACHE_ROI_BATCHES and not cfg.MODEL.CT_CLASSIFIER.TRAIN_BN_AFFINE
