"""Placeholder for ``detectron2._C`` when Detectron2 is installed without its C++ extension.

The PyPI sdist ``pb1-detectron2==0.6`` ships Detectron2's Python sources but not its C++ ones.
ct-lesion-d2 needs none of the compiled ops (deformable and rotated ops, the fast COCO
evaluator), so ``tools/setup_env.sh`` installs this file as ``detectron2/_C.py``. Importing it
works; calling any op raises an error that names the op and says how to get the real one.
"""

IS_PLACEHOLDER = True


class MissingDetectron2Op(RuntimeError):
    """Raised when a compiled Detectron2 op is called but only the placeholder is installed."""


def _missing(name):
    def op(*args, **kwargs):
        raise MissingDetectron2Op(
            f"detectron2._C.{name} is not available: Detectron2 was installed without its C++ "
            "extension (pb1-detectron2 0.6 route), so compiled ops such as deformable conv, "
            "rotated boxes and the fast COCO evaluator cannot run. Use "
            "COCOEvaluator(..., use_fast_impl=False), or install Detectron2 from its official "
            "source (set DETECTRON2_REQUIREMENT and rerun tools/setup_env.sh)."
        )

    op.__name__ = name
    return op


def get_compiler_version():
    return "none (detectron2._C placeholder, no C++ extension)"


def get_cuda_version():
    return "none (detectron2._C placeholder)"


def has_cuda():
    return False


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _missing(name)
