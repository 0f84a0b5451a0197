"""Optimizers: Detectron2's SGD, or Adam as in the paper (``SOLVER.CT_OPTIMIZER``)."""

import torch
from detectron2.solver import build_optimizer
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping


def build_ct_optimizer(cfg, model):
    """Build the optimizer named by ``cfg.SOLVER.CT_OPTIMIZER`` ("SGD" or "ADAM").

    Adam uses Detectron2's parameter groups (``WEIGHT_DECAY_NORM``, ``BIAS_LR_FACTOR`` ...) and
    gradient clipping settings, so only the update rule differs from the default.
    """
    name = cfg.SOLVER.CT_OPTIMIZER.upper()
    if name == "SGD":
        return build_optimizer(cfg, model)
    if name != "ADAM":
        raise ValueError(f"SOLVER.CT_OPTIMIZER must be 'SGD' or 'ADAM', got {name!r}")
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    adam = maybe_add_gradient_clipping(cfg, torch.optim.Adam)
    return adam(params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
