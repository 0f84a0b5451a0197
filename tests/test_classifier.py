"""COVID-CT-Mask-Net classifier: ranked RoI batch, frozen detector, segmentation weights, sizes."""

import logging

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

import ct_lesion_d2  # noqa: F401
from ct_lesion_d2.model_zoo import (
    CLASSIFIER_VARIANTS,
    S_MODULE_REFERENCE,
    SEGMENTATION_VARIANTS,
    TORCHVISION_CLASSIFIER_EXTRA,
    get_config,
)
from ct_lesion_d2.modeling.detect import detect
from ct_lesion_d2.modeling.meta_arch import (
    CTMaskNetClassifier,
    build_roi_batch,
    initialize_from_segmenter,
    load_model_weights,
    load_segmentation_weights,
    replicate_in_rank_order,
)
from ct_lesion_d2.solver import build_ct_optimizer

HEIGHT, WIDTH = 160, 200
CPU = ["MODEL.DEVICE", "cpu"]
OPTIONS = dict(score_thresh=-0.01, nms_thresh=0.75, remove_empty_boxes=True, row_features="deltas")


def make_image(seed=0, blank=False):
    generator = torch.Generator().manual_seed(seed)
    if blank:
        return torch.zeros(3, HEIGHT, WIDTH)
    return torch.rand(3, HEIGHT, WIDTH, generator=generator) * 255


def synthetic_detections(num_rois, seed=0, num_classes=1):
    """Random scores, well-separated boxes (no NMS suppression) and deltas for ``num_rois``."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(num_rois, num_classes, generator=generator)
    x0 = (torch.arange(num_rois, dtype=torch.float32) * 7 % 190)[:, None, None]
    y0 = (torch.arange(num_rois, dtype=torch.float32) * 7 // 190 * 7)[:, None, None]
    boxes = torch.cat([x0, y0, x0 + 5, y0 + 5], dim=2).expand(-1, num_classes, 4).clone()
    deltas = torch.randn(num_rois, num_classes, 4, generator=generator)
    return scores, boxes, deltas


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    # fewer proposals than the 1000 of the paper keep the backward pass fast on CPU
    return build_model(
        get_config("classifier_R18_T1", CPU + ["MODEL.RPN.POST_NMS_TOPK_TEST", "300"])
    )


def test_replication_keeps_rank_order_and_every_survivor():
    assert replicate_in_rank_order(torch.tensor([3, 1, 2]), 5).tolist() == [3, 3, 1, 2, 2]
    for n in range(1, 12):
        ranked = torch.arange(n) * 10
        out = replicate_in_rank_order(ranked, 11)
        assert len(out) == 11 and torch.equal(out.unique_consecutive(), ranked)
        counts = torch.unique_consecutive(out, return_counts=True)[1]
        assert set(counts.tolist()) <= {11 // n, -(-11 // n)}
    assert replicate_in_rank_order(torch.arange(20), 11).tolist() == list(range(11))
    with pytest.raises(ValueError):
        replicate_in_rank_order(torch.zeros(0), 4)


@pytest.mark.parametrize("num_rois", [0, 1, 5, 300])
def test_ranked_batch_has_b_rows_in_score_order(num_rois):
    scores, boxes, deltas = synthetic_detections(num_rois, num_classes=2)
    batch = build_roi_batch(scores, boxes, deltas, (HEIGHT, WIDTH), batch_size=16, **OPTIONS)
    assert batch.rows.shape == (16, 5) and batch.boxes.shape == (16, 4)
    assert torch.all(batch.scores[:-1] >= batch.scores[1:])
    assert torch.equal(batch.rows[:, 0], batch.scores)
    assert batch.num_detections == min(2 * num_rois, 16)
    if num_rois == 0:
        assert not batch.rows.any()
    else:
        # the best candidate comes first, with the deltas of its own class
        roi, cls = divmod(int(scores.argmax()), 2)
        assert torch.equal(batch.rows[0], torch.cat([scores[roi, cls : cls + 1], deltas[roi, cls]]))
        expected = sorted(scores.flatten().tolist(), reverse=True)[:16]
        assert sorted(set(batch.scores.tolist()), reverse=True) == expected


def test_empty_boxes_removed_and_duplicates_suppressed():
    scores = torch.tensor([[0.9], [0.8], [0.7], [0.6], [0.95]])
    boxes = torch.tensor(
        [
            [10, 10, 10, 30],
            [0, 0, 20, 20],
            [0, 0, 20, 21],
            [50, 50, 70, 70],
            [0, 0, 9, float("nan")],
        ]
    )
    deltas = torch.arange(20, dtype=torch.float32).reshape(5, 1, 4)
    inputs = [t.clone() for t in (scores, boxes, deltas)]
    batch = build_roi_batch(
        scores, boxes[:, None], deltas, (HEIGHT, WIDTH), batch_size=5, **OPTIONS
    )
    # NaN box 4 and zero-area box 0 removed, box 2 suppressed by box 1 (IoU 0.95): [1, 3] -> 5 rows
    assert batch.scores.tolist() == pytest.approx([0.8, 0.8, 0.8, 0.6, 0.6])
    assert torch.equal(batch.rows[0, 1:], deltas[1, 0]) and torch.equal(
        batch.rows[4, 1:], deltas[3, 0]
    )
    kept = build_roi_batch(
        scores,
        boxes[:, None],
        deltas,
        (HEIGHT, WIDTH),
        batch_size=5,
        **{**OPTIONS, "remove_empty_boxes": False},
    )
    assert kept.scores.tolist() == pytest.approx([0.9, 0.8, 0.6, 0.0, 0.0])
    assert all(a.allclose(b, equal_nan=True) for a, b in zip(inputs, (scores, boxes, deltas)))


def test_box_row_features_are_normalised():
    scores, boxes, deltas = synthetic_detections(3)
    options = {**OPTIONS, "row_features": "boxes"}
    batch = build_roi_batch(scores, boxes, deltas, (HEIGHT, WIDTH), batch_size=3, **options)
    scale = torch.tensor([WIDTH, HEIGHT, WIDTH, HEIGHT])
    assert torch.allclose(batch.rows[:, 1:] * scale, batch.boxes)


@pytest.mark.parametrize("blank", [False, True], ids=["noise", "blank"])
def test_end_to_end_inference(classifier, blank):
    classifier.eval()
    with torch.no_grad():
        (out,) = classifier([{"image": make_image(blank=blank), "height": 320, "width": 400}])
    assert set(out) == {
        "class_logits",
        "class_probs",
        "pred_class",
        "roi_boxes",
        "roi_scores",
        "roi_num_detections",
    }
    assert 0 <= out["roi_num_detections"] <= 128
    assert (out["roi_num_detections"] == 0) == (not out["roi_scores"].any())
    assert out["class_logits"].shape == (3,)
    assert torch.allclose(out["class_probs"], out["class_logits"].sigmoid())
    assert int(out["pred_class"]) == int(out["class_logits"].argmax())
    assert len(out["roi_boxes"]) == 128 and out["roi_scores"].shape == (128,)
    assert torch.all(out["roi_scores"][:-1] >= out["roi_scores"][1:])
    assert out["roi_boxes"].tensor[:, 2].max() <= 400 and out["roi_boxes"].tensor[:, 3].max() <= 320


def test_few_proposals_sigmoid_scores_and_box_rows():
    """End to end with 20 proposals: the 128 rows replicate the survivors in rank order."""
    torch.manual_seed(0)
    opts = ["MODEL.RPN.POST_NMS_TOPK_TEST", "20", "MODEL.CT_CLASSIFIER.SIGMOID_SCORES", "True"]
    opts += ["MODEL.CT_CLASSIFIER.ROW_FEATURES", "boxes"]
    model = build_model(get_config("classifier_R18_T2", CPU + opts)).eval()
    with torch.no_grad():
        _, features, proposals, _ = detect(model, [{"image": make_image()}], roi_heads=False)
        (batch,) = model.roi_batches(features, proposals)
    assert 0 < batch.num_detections <= 20
    assert batch.rows.shape == (128, 5) and torch.all(batch.scores[:-1] >= batch.scores[1:])
    assert len(batch.scores.unique_consecutive()) == batch.num_detections
    assert 0 < batch.scores.min() and batch.scores.max() < 1
    scale = torch.tensor([WIDTH, HEIGHT, WIDTH, HEIGHT])
    assert torch.allclose(batch.rows[:, 1:] * scale, batch.boxes)
    assert 0 <= batch.rows[:, 1:].min() and batch.rows[:, 1:].max() <= 1


def test_only_s_and_backbone_bn_affine_train(classifier):
    trainable = {n for n, p in classifier.named_parameters() if p.requires_grad}
    expected = {n for n, _ in classifier.classifier.named_parameters(prefix="classifier")}
    expected |= {
        f"{n}.{k}"
        for n, m in classifier.backbone.named_modules(prefix="backbone")
        if isinstance(m, torch.nn.BatchNorm2d)
        for k in ("weight", "bias")
    }
    assert trainable == expected and any(".norm." in n for n in trainable)
    params = {n: p.detach().clone() for n, p in classifier.named_parameters()}
    buffers = {n: b.clone() for n, b in classifier.named_buffers()}
    cfg = get_config("classifier_R18_T1", CPU + ["SOLVER.BASE_LR", "0.001"])
    optimizer = build_ct_optimizer(cfg, classifier)
    classifier.train()
    assert classifier.classifier.training
    assert not any(m.training for module in classifier.detector for m in module.modules())
    classifier.zero_grad()
    inputs = [{"image": make_image(0), "class_id": 2}, {"image": make_image(1), "class_id": 0}]
    losses = classifier(inputs)
    assert set(losses) == {"loss_cls_image"} and torch.isfinite(losses["loss_cls_image"])
    losses["loss_cls_image"].backward()
    optimizer.step()
    with_grad = {n for n, p in classifier.named_parameters() if p.grad is not None}
    changed = {n for n, p in classifier.named_parameters() if not torch.equal(p, params[n])}
    assert with_grad == trainable and changed == trainable
    assert all(torch.equal(b, buffers[n]) for n, b in classifier.named_buffers())


def test_segmentation_checkpoint_fills_shared_weights(tmp_path, caplog):
    torch.manual_seed(1)
    segmentation = build_model(get_config("mask_rcnn_R18_T1", CPU))
    for module in segmentation.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    DetectionCheckpointer(segmentation, save_dir=str(tmp_path)).save("segmentation")
    path = str(tmp_path / "segmentation.pth")
    cfg = get_config("classifier_R18_T1", CPU + ["MODEL.CT_CLASSIFIER.SEGMENTATION_WEIGHTS", path])
    model = build_model(cfg)
    # building loads nothing; the checkpointer step before training does
    assert not torch.equal(
        model.state_dict()["roi_heads.box_head.fc1.weight"],
        segmentation.state_dict()["roi_heads.box_head.fc1.weight"],
    )
    with caplog.at_level(logging.INFO):
        report = initialize_from_segmenter(model, cfg)
    source, target = segmentation.state_dict(), model.state_dict()
    shared = sorted(set(source) & set(target))
    assert sorted(report.loaded) == shared and not report.incorrect_shapes
    assert all(torch.equal(source[k], target[k]) for k in shared)
    mask_keys = [k for k in source if k.startswith("roi_heads.mask_head.")]
    assert mask_keys and sorted(report.unused) == sorted(mask_keys)
    assert report.missing and all(k.startswith("classifier.") for k in report.missing)
    assert "checkpoint keys unused" in caplog.text
    # one summary line at INFO; the hundreds of key names only at DEBUG (--verbose)
    assert "Loaded keys" not in caplog.text and "roi_heads.box_head.fc1" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="ct_lesion_d2"):
        initialize_from_segmenter(model, cfg)
    (listing,) = [r for r in caplog.records if r.getMessage().startswith("Loaded keys: ")]
    assert listing.levelno == logging.DEBUG and "roi_heads.box_head.fc1.weight" in listing.msg
    assert all(not p.requires_grad for p in model.roi_heads.parameters())
    # the same report from the function, and a warning for an empty path
    assert load_segmentation_weights(model, path).unused == report.unused
    with caplog.at_level(logging.WARNING):
        assert load_segmentation_weights(model, "").loaded == []
    assert "SEGMENTATION_WEIGHTS is empty" in caplog.text


def test_trained_classifier_checkpoint_is_self_contained(tmp_path):
    """A classifier builds from its config with no segmentation checkpoint on disk, and a
    trained classifier checkpoint alone gives back the outputs of the model that saved it."""
    missing = str(tmp_path / "no_such_segmenter.pth")
    opts = CPU + [
        "MODEL.RPN.POST_NMS_TOPK_TEST",
        "50",
        "MODEL.CT_CLASSIFIER.BATCH_DETECTIONS",
        "16",
        "MODEL.CT_CLASSIFIER.SEGMENTATION_WEIGHTS",
        missing,
    ]
    cfg = get_config("classifier_R18_T1_ucsd_cpu.yaml", opts)
    torch.manual_seed(2)
    trained = build_model(cfg).eval()
    assert trained.num_classes == 2
    for p in trained.parameters():  # stands for training: every weight differs from a new model
        p.data.add_(0.01 * torch.randn_like(p))
    DetectionCheckpointer(trained, save_dir=str(tmp_path)).save("classifier")
    inputs = [{"image": make_image(3), "height": HEIGHT, "width": WIDTH}]
    with torch.no_grad():
        (before,) = trained(inputs)
    cfg.MODEL.WEIGHTS = str(tmp_path / "classifier.pth")
    torch.manual_seed(3)
    loaded = build_model(cfg).eval()
    assert load_model_weights(loaded, cfg) == cfg.MODEL.WEIGHTS
    with torch.no_grad():
        (after,) = loaded(inputs)
    for key in ("class_logits", "roi_scores"):
        assert torch.equal(before[key], after[key]), key
    assert torch.equal(before["roi_boxes"].tensor, after["roi_boxes"].tensor)
    # without MODEL.WEIGHTS, the inference loader reads the segmentation checkpoint
    cfg.MODEL.WEIGHTS = ""
    with pytest.raises(Exception, match="no_such_segmenter"):
        load_model_weights(build_model(cfg), cfg)


@pytest.mark.parametrize("name", [n for n, v in CLASSIFIER_VARIANTS.items() if v[2]])
def test_state_dict_matches_spec(name):
    model = build_model(get_config(name, CPU))
    assert isinstance(model, CTMaskNetClassifier)
    reference = CLASSIFIER_VARIANTS[name][2]
    elements = sum(t.numel() for t in model.state_dict().values())
    assert abs(elements + TORCHVISION_CLASSIFIER_EXTRA - reference) / reference < 1e-3
    assert sum(p.numel() for p in model.classifier.parameters()) == S_MODULE_REFERENCE
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert S_MODULE_REFERENCE < trainable < 0.62e6


@pytest.mark.parametrize("name", list(CLASSIFIER_VARIANTS))
def test_config_matches_segmentation_twin(name):
    cfg = get_config(name)
    twin = get_config(name.replace("classifier", "mask_rcnn"))
    assert cfg.MODEL.META_ARCHITECTURE == "CTMaskNetClassifier" and not cfg.MODEL.MASK_ON
    assert cfg.SOLVER.CT_OPTIMIZER == "ADAM" and cfg.SOLVER.IMS_PER_BATCH == 8
    for key in ("RESNETS", "CT_BACKBONE", "FPN", "ANCHOR_GENERATOR", "RPN", "ROI_BOX_HEAD"):
        assert cfg.MODEL[key] == twin.MODEL[key], key
    assert cfg.MODEL.ROI_HEADS.IN_FEATURES == twin.MODEL.ROI_HEADS.IN_FEATURES
    big = name.endswith("R50")
    assert cfg.MODEL.CT_CLASSIFIER.BATCH_DETECTIONS == (256 if big else 128)
    assert cfg.MODEL.CT_CLASSIFIER.HIDDEN_DIM == (1024 if big else 512)
    assert name.replace("classifier", "mask_rcnn") in SEGMENTATION_VARIANTS
