"""Forward and backward passes of every variant, on odd-sized images with and without lesions."""

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

import ct_lesion_d2  # noqa: F401
from ct_lesion_d2.model_zoo import SEGMENTATION_VARIANTS, get_config

HEIGHT, WIDTH = 200, 249


def make_input(with_lesion):
    rng = np.random.default_rng(0)
    image = torch.as_tensor(rng.integers(0, 255, (3, HEIGHT, WIDTH)), dtype=torch.float32)
    instances = Instances((HEIGHT, WIDTH))
    masks = torch.zeros((1 if with_lesion else 0, HEIGHT, WIDTH), dtype=torch.bool)
    if with_lesion:
        masks[0, 60:110, 80:150] = True
    instances.gt_masks = BitMasks(masks)
    instances.gt_boxes = masks_to_boxes(masks)
    instances.gt_classes = torch.zeros(len(masks), dtype=torch.int64)
    return {"image": image, "instances": instances, "height": HEIGHT, "width": WIDTH}


def masks_to_boxes(masks):
    return BitMasks(masks).get_bounding_boxes() if len(masks) else Boxes(torch.zeros(0, 4))


@pytest.fixture(scope="module", params=list(SEGMENTATION_VARIANTS))
def model(request):
    torch.manual_seed(0)
    opts = ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    return build_model(get_config(request.param, opts))


@pytest.mark.parametrize("with_lesion", [True, False], ids=["lesion", "no-lesion"])
def test_forward_backward(model, with_lesion):
    model.train()
    with EventStorage():  # the heads log training statistics to the current storage
        losses = model([make_input(with_lesion)])
    expected = {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"}
    assert set(losses) == expected
    total = sum(losses.values())
    assert torch.isfinite(total)
    model.zero_grad()
    total.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_inference_on_odd_size(model):
    model.eval()
    with torch.no_grad():
        (out,) = model([make_input(True)])
    instances = out["instances"]
    assert instances.image_size == (HEIGHT, WIDTH)
    assert len(instances) <= 128
    if len(instances):
        assert instances.pred_masks.shape[1:] == (HEIGHT, WIDTH)
