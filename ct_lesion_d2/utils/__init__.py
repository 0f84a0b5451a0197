"""Helpers that do not belong to a Detectron2 sub-package."""

import importlib
import sys


def ensure_detectron2_C():
    """Make ``detectron2._C`` importable.

    ``tools/setup_env.sh`` installs the placeholder as ``detectron2/_C.py`` on the no-C++ route.
    Where Detectron2 was installed some other way without its extension, the placeholder is
    registered in ``sys.modules`` here, so that importing ct_lesion_d2 before or after detectron2
    gives the same working modules.

    Returns:
        bool: True when the real compiled extension is present.
    """
    try:
        module = importlib.import_module("detectron2._C")
    except ImportError:
        from . import detectron2_placeholder_C as module

        sys.modules["detectron2._C"] = module
        import detectron2

        detectron2._C = module
    return not getattr(module, "IS_PLACEHOLDER", False)


def unwrap_model(model):
    """The module inside a ``DistributedDataParallel`` or ``DataParallel`` wrapper (as
    Detectron2's ``create_ddp_model`` makes it), or ``model`` itself."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    if isinstance(model, (DistributedDataParallel, DataParallel)):
        return model.module
    return model


ensure_detectron2_C()
