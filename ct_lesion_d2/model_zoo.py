"""The model variants of the paper, their config files and their published sizes."""
import os
from collections import OrderedDict


CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

# Detectron2's box and mask predictors have no background slot; torchvision's (the reference
# implementation's) do: 4 * (128 + 1) box-regression and 128 + 1 mask-logit elements more.
TORCHVISION_PREDICTOR_EXTRA = 645
# The classifier has no mask head: only the 4 * (128 + 1) box-regression elements differ.
TORCHVISION_CLASSIFIER_EXTRA = 516

# name -> (config file, paper Table 1 in millions, the reference arithmetic
# of docs/PAPER.md, section 4)
SEGMENTATION_VARIANTS = OrderedDict(
    [
        ("mask_rcnn_R18", ("mask_rcnn_R18_FPN1_lesion.yaml", 14.52, 14_520_694)),
        ("mask_rcnn_R18_T1", ("mask_rcnn_R18_T1_FPN1_lesion.yaml", 6.12, 6_056_305)),
        ("mask_rcnn_R18_T2", ("mask_rcnn_R18_T2_FPN1_lesion.yaml", 4.02, 3_921_260)),
        ("mask_rcnn_R34", ("mask_rcnn_R34_FPN1_lesion.yaml", 24.63, 24_636_294)),
        ("mask_rcnn_R34_T1", ("mask_rcnn_R34_T1_FPN1_lesion.yaml", 11.45, 11_449_215)),
        ("mask_rcnn_R34_T2", ("mask_rcnn_R34_T2_FPN1_lesion.yaml", 4.68, 4_587_378)),
        ("mask_rcnn_R50", ("mask_rcnn_R50_FPN_lesion.yaml", 31.78, 31_781_015)),
    ]
)

# COVID-CT-Mask-Net classifiers, same layout; the R50 baseline has no published size (None).
CLASSIFIER_VARIANTS = OrderedDict(
    [
        ("classifier_R18", ("classifier_R18_covidx.yaml", 14.75, 14_752_119)),
        ("classifier_R18_T1", ("classifier_R18_T1_covidx.yaml", 6.35, 6_287_730)),
        ("classifier_R18_T2", ("classifier_R18_T2_covidx.yaml", 4.25, 4_152_685)),
        ("classifier_R34", ("classifier_R34_covidx.yaml", 24.86, 24_867_719)),
        ("classifier_R34_T1", ("classifier_R34_T1_covidx.yaml", 11.74, 11_680_640)),
        ("classifier_R34_T2", ("classifier_R34_T2_covidx.yaml", 4.92, 4_818_803)),
        ("classifier_R50", ("classifier_R50_covidx.yaml", None, None)),
    ]
)

# Module S with B = 128, F = 512 (docs/PAPER.md, section 4).
S_MODULE_REFERENCE = 592_387


def config_path(name):
    """Path of a variant's config file, from its name or a file name under ``configs/``."""
    variants = {**SEGMENTATION_VARIANTS, **CLASSIFIER_VARIANTS}
    if name in variants:
        name = variants[name][0]
    path = name if os.path.isfile(name) else os.path.join(CONFIG_DIR, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such config (variants: {list(variants)})")
    return path


def get_config(name, opts=()):
    """A variant's config: :func:`ct_lesion_d2.config.get_cfg_for` under its model-zoo name.

    Args:
        name (str): variant name (``mask_rcnn_R18_T1``, ``classifier_R18_T1``), config file
            name or path.
        opts (list[str]): ``KEY VALUE`` overrides, as on the command line.

    Returns:
        CfgNode: unfrozen.
    """
    from .config import get_cfg_for

    return get_cfg_for(name, opts)
