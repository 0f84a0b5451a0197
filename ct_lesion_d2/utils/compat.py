"""Where the two Detectron2 builds the project runs on differ, and what the project does there.

The official source (``pip install 'git+https://github.com/facebookresearch/detectron2.git'``,
the main route of ``tools/setup_env.sh``) and the PyPI snapshot ``pb1-detectron2==0.6`` (the
fallback, installed without its C++ extension) both call themselves "0.6". Each difference is
detected from what the installed package does, not from its version, and each has a test in
``tests/test_compat.py``:

1. Compiled operators. The official build has a real ``detectron2._C``; the fallback has the
   placeholder of ``detectron2_placeholder_C.py``. ``HAS_COMPILED_OPS`` says which;
   ``COCOEvaluator`` then uses its fast C++ AP computation (``use_fast_impl``) or the pure
   Python ``pycocotools`` one.
2. Optimizer state in checkpoints. The official ``DefaultTrainer.state_dict`` saves its inner
   trainer's state (the optimizer) under ``"_trainer"``; 0.6 saves only the iteration and the
   hooks. ``TRAINER_SAVES_OPTIMIZER`` says which; ``CTLesionTrainer`` adds the same entry on 0.6,
   so checkpoints have one layout on both.
3. Several processes on the CPU. The official ``launch`` starts them with the GLOO backend
   where there is no GPU; 0.6 asserts CUDA. ``LAUNCH_ON_CPU`` says which; ``tools/train_net.py``
   refuses ``--num-gpus 2`` on a CPU machine with the 0.6 build in one line.
4. DistributedDataParallel of a CPU model. ``create_ddp_model`` (both builds) passes
   ``device_ids=[local_rank]``, which torch refuses for a module on the CPU, and
   ``DefaultTrainer.__init__`` calls it; :func:`cpu_ddp` makes it pass none there.
5. The training loader's iterator. The official ``SimpleTrainer`` calls ``iter(data_loader)`` at
   its first step, 0.6 in its constructor; ``ResumableTrainLoader`` starts reading only at the
   first batch, so ``set_start_iter`` after the trainer is built works on both.
"""

import contextlib
import importlib
import inspect

import detectron2.engine.defaults as d2_defaults
from detectron2.engine import DefaultTrainer
from detectron2.utils import comm

from . import ensure_detectron2_C

__all__ = [
    "HAS_COMPILED_OPS",
    "LAUNCH_ON_CPU",
    "TRAINER_SAVES_OPTIMIZER",
    "cpu_ddp",
    "detectron2_build",
]

HAS_COMPILED_OPS = ensure_detectron2_C()
TRAINER_SAVES_OPTIMIZER = "state_dict" in vars(DefaultTrainer)
# The official launch picks its backend with `"NCCL" if has_gpu else "GLOO"`; 0.6 only NCCL.
# (detectron2.engine.launch, the attribute, is the function: the package re-exports it.)
LAUNCH_ON_CPU = "GLOO" in inspect.getsource(importlib.import_module("detectron2.engine.launch"))


def detectron2_build():
    """One line naming the installed Detectron2 build, for logs and error messages."""
    if HAS_COMPILED_OPS and LAUNCH_ON_CPU:
        return "the official Detectron2 source (compiled operators, CPU multi-process launch)"
    if HAS_COMPILED_OPS:
        return "a Detectron2 build with compiled operators and a CUDA-only launch"
    return "pb1-detectron2 0.6 without its C++ extension (placeholder detectron2._C)"


def _create_cpu_ddp_model(model, **kwargs):
    """``create_ddp_model`` that gives a CPU module no ``device_ids`` (torch refuses them)."""
    if comm.get_world_size() > 1 and next(model.parameters()).device.type == "cpu":
        kwargs.setdefault("device_ids", None)
    return _create_ddp_model(model, **kwargs)


_create_ddp_model = d2_defaults.create_ddp_model


@contextlib.contextmanager
def cpu_ddp():
    """Inside the block, ``DefaultTrainer.__init__`` wraps a CPU model in DDP without
    ``device_ids`` (difference 4 above); a no-op in a single process."""
    if comm.get_world_size() == 1:
        yield
        return
    d2_defaults.create_ddp_model = _create_cpu_ddp_model
    try:
        yield
    finally:
        d2_defaults.create_ddp_model = _create_ddp_model
