"""Detectron2 and ct_lesion_d2 import in either order; the _C placeholder names missing ops."""

import os
import subprocess
import sys

import pytest

import ct_lesion_d2
from ct_lesion_d2.utils import detectron2_placeholder_C as placeholder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(ct_lesion_d2.__file__)))


@pytest.mark.parametrize(
    "order",
    [
        "import detectron2; from detectron2.evaluation import COCOEvaluator; import ct_lesion_d2",
        "import ct_lesion_d2; import detectron2; from detectron2.layers import nms_rotated",
    ],
)
def test_import_order(order):
    env = dict(os.environ, PYTHONPATH=REPO)
    code = (
        order
        + "; from detectron2.modeling import BACKBONE_REGISTRY; "
        + ("assert 'build_ct_lesion_resnet_fpn_backbone' in BACKBONE_REGISTRY._obj_map")
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_placeholder_names_the_missing_op():
    with pytest.raises(placeholder.MissingDetectron2Op, match=r"detectron2\._C\.nms_rotated"):
        placeholder.nms_rotated(None, None, 0.5)
    assert "placeholder" in placeholder.get_compiler_version()
