"""Project config keys of ct-lesion-d2, added to Detectron2's defaults by ``add_ct_lesion_config``."""
from detectron2.config import CfgNode as CN


def add_ct_lesion_config(cfg):
    """Add the ct-lesion-d2 keys to a Detectron2 config, in place.

    Args:
        cfg (CfgNode): a config from ``detectron2.config.get_cfg()``.
    """
    cfg.MODEL.CT_BACKBONE = CN()
    # Number of final ResNet stages removed: 0 = T0 (FPN on res5), 1 = T1 (res4), 2 = T2 (res3).
    cfg.MODEL.CT_BACKBONE.TRUNCATION = 0
    # FPN levels: 1 = the paper's single level on the last kept stage; 4 = standard FPN res2-res5.
    cfg.MODEL.CT_BACKBONE.FPN_LEVELS = 1

    # Optimizer: "SGD" (Detectron2's default) or "ADAM" (the paper: Adam, lr 1e-5, wd 1e-3).
    cfg.SOLVER.CT_OPTIMIZER = "SGD"
