"""Optimizers: Detectron2's SGD, or Adam as in the paper (``SOLVER.CT_OPTIMIZER``)."""

import torch
from detectron2.solver import build_optimizer
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping


def build_ct_optimizer(cfg, model):
    """Build the optimizer named by ``cfg.SOLVER.CT_OPTIMIZER`` ("SGD" or "ADAM").

    Adam uses Detectron2's parameter groups (``WEIGHT_DECAY_NORM``, ``BIAS_LR_FACTOR`` ...) and
    gradient clipping settings, so only the update rule differs from the default. The learning
    rate factors of :func:`module_lr_factors` (the classifier's image branch) are applied last.
    """
    optimizer = _build_named_optimizer(cfg, model)
    factors = module_lr_factors(cfg)
    if factors:
        scale_lr_by_prefix(optimizer, model, factors)
    return optimizer


def module_lr_factors(cfg):
    """dict: parameter-name prefix -> learning-rate factor; the image branch of the classifier
    (``MODEL.CT_CLASSIFIER.IMAGE_BRANCH_LR_FACTOR``) trains from scratch beside a module S whose
    paper rate is far lower."""
    ct = cfg.MODEL.get("CT_CLASSIFIER")
    if ct is None or not ct.IMAGE_BRANCH or ct.IMAGE_BRANCH_LR_FACTOR == 1.0:
        return {}
    return {"image_branch.": ct.IMAGE_BRANCH_LR_FACTOR}


def scale_lr_by_prefix(optimizer, model, factors):
    """Split the optimizer's parameter groups so that parameters whose name (in
    ``model.named_parameters()``, without a DDP wrapper's ``module.``) starts with a prefix of
    ``factors`` get the group's learning rate times its factor. Call it before the LR scheduler
    is built (the scheduler takes each group's rate as its base)."""
    model = getattr(model, "module", model)
    factor_of = {
        id(p): f
        for name, p in model.named_parameters()
        for prefix, f in factors.items()
        if name.startswith(prefix)
    }
    groups = []
    for group in optimizer.param_groups:
        split = {}
        for p in group["params"]:
            split.setdefault(factor_of.get(id(p), 1.0), []).append(p)
        for factor, params in split.items():
            groups.append({**group, "params": params, "lr": group["lr"] * factor})
    optimizer.param_groups[:] = groups


def _build_named_optimizer(cfg, model):
    """The optimizer of ``SOLVER.CT_OPTIMIZER`` before any module learning-rate factor."""
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
