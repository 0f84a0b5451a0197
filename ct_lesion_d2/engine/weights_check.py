"""Weights checked against the model they are loaded into.

fvcore's ``Checkpointer`` loads with ``strict=False``: a checkpoint of another architecture
(an R18 model's weights given with an R50 config) leaves most of the model random, logs a
hundred key names, and the model then predicts normal-looking nonsense. Here the incompatible
keys Detectron2's ``DetectionCheckpointer`` finds (after its own name conversions) are kept
and compared with a known, named set of expected differences; anything beyond it stops with
one line naming the weights, the config and the first keys.
"""

import logging
import os

from detectron2.modeling import build_model

from ..modeling.meta_arch.segmentation_weights import ReportingCheckpointer

__all__ = [
    "EXPECTED_DIFFERENCES",
    "ReportingCheckpointer",
    "WeightsError",
    "build_checked_model",
    "load_checked_weights",
]

logger = logging.getLogger(__name__)

# Named key differences that are not errors: (model class name, purpose) -> {name: (kind, prefix)}.
# "inference": a trained model; "init": a classifier initialised from a segmentation model.
EXPECTED_DIFFERENCES = {
    ("CTMaskNetClassifier", "inference"): {
        "the mask head, which the classifier does not use": ("unexpected", "roi_heads.mask_head."),
    },
    ("CTMaskNetClassifier", "init"): {
        "the mask head, which the classifier does not use": ("unexpected", "roi_heads.mask_head."),
        "module S (the classifier), trained after the detector": ("missing", "classifier."),
    },
}
# Keys named in the one-line message, per kind.
_SHOWN = 3


class WeightsError(ValueError):
    """Weights that cannot be read or do not fit the model; the message is one line."""


def _unexpected(keys, prefixes):
    return [k for k in keys if not any(k.startswith(p) for p in prefixes)]


def _describe(label, keys):
    shown = ", ".join(keys[:_SHOWN]) + (", ..." if len(keys) > _SHOWN else "")
    return f"{len(keys)} {label} ({shown})"


def load_checked_weights(model, weights, config_file=None, purpose="inference"):
    """Load ``weights`` into ``model`` and stop if they do not fit it.

    Args:
        model (nn.Module): built from the config.
        weights (str): checkpoint file (Detectron2 ``.pth``/``.pkl``).
        config_file (str or None): named in the message ("the config" when None).
        purpose (str): "inference" or "init" (see ``EXPECTED_DIFFERENCES``).

    Returns:
        dict: the named expected differences that were found, name -> number of keys.

    Raises:
        WeightsError: the file is missing or unreadable, or keys are missing, unexpected or
            of another shape beyond the expected differences.
    """
    config = config_file or "the config"
    if not os.path.isfile(weights):
        raise WeightsError(f"{weights}: weights file not found (MODEL.WEIGHTS or --weights)")
    checkpointer = ReportingCheckpointer(model)
    try:
        checkpointer.load(weights, checkpointables=[])
    except Exception as e:  # torch's unpickler, zip reader and pickle all fail differently
        raise WeightsError(
            f"{weights}: not a readable checkpoint (truncated, or not a PyTorch/Detectron2 "
            f"weights file: {type(e).__name__})"
        ) from None
    incompatible = checkpointer.incompatible
    expected = EXPECTED_DIFFERENCES.get((type(model).__name__, purpose), {})
    allowed = {
        kind: [p for k, p in expected.values() if k == kind] for kind in ("missing", "unexpected")
    }
    missing = _unexpected(incompatible.missing_keys, allowed["missing"])
    unexpected = _unexpected(incompatible.unexpected_keys, allowed["unexpected"])
    shapes = [key for key, _, _ in incompatible.incorrect_shapes]
    if missing or unexpected or shapes:
        parts = [
            _describe(label, keys)
            for label, keys in (
                ("model keys missing", missing),
                ("unexpected keys", unexpected),
                ("keys of another shape", shapes),
            )
            if keys
        ]
        raise WeightsError(
            f"{weights} does not fit the {type(model).__name__} of {config}: "
            f"{'; '.join(parts)}. Give the config these weights were trained with"
        )
    found = {}
    for name, (kind, prefix) in expected.items():
        keys = incompatible.missing_keys if kind == "missing" else incompatible.unexpected_keys
        count = sum(1 for k in keys if k.startswith(prefix))
        if count:
            found[name] = count
            logger.info(f"{weights}: {count} keys of {name} {kind}, as expected")
    return found


def build_checked_model(cfg, config_file=None, purpose="inference"):
    """``build_model(cfg)`` in eval mode with ``cfg.MODEL.WEIGHTS`` loaded and checked.

    Raises:
        WeightsError: see :func:`load_checked_weights`; also when ``MODEL.WEIGHTS`` is empty.
    """
    if not cfg.MODEL.WEIGHTS:
        raise WeightsError(
            f"{config_file or 'the config'}: MODEL.WEIGHTS is empty; give a trained checkpoint "
            "with --weights"
        )
    model = build_model(cfg)
    model.eval()
    load_checked_weights(model, cfg.MODEL.WEIGHTS, config_file, purpose)
    return model
