"""Run ``tools/train_net.py`` with a fault injected at a chosen moment (tests only).

    CT_LESION_FAULT=<kind>:<arg> python tests/fault_injection.py <train_net.py arguments>

Kinds, each ending the process with SIGKILL (nothing is flushed, no handler runs):

- ``iteration:N``: during iteration N, after its forward and backward pass and before the
  hooks that follow it (checkpoint, evaluation) run.
- ``checkpoint:NAME``: while ``NAME.pth`` is being written: half of its bytes are on disk.
- ``tag:NAME``: after ``NAME.pth`` is complete, before ``last_checkpoint`` names it.
- ``eval:N``: during the N-th evaluation (1-based), after its first image.
"""

import io
import os
import runpy
import signal
import sys

import torch
from fvcore.common.checkpoint import Checkpointer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from ct_lesion_d2.engine import CTLesionTrainer  # noqa: E402


def _kill():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _at_iteration(n):
    run_step = CTLesionTrainer.run_step

    def patched(self):
        run_step(self)
        if self.iter == n:
            _kill()

    CTLesionTrainer.run_step = patched


def _during_checkpoint_write(name):
    save = torch.save

    def patched(obj, f, *args, **kwargs):
        target = getattr(f, "name", "")
        if isinstance(target, str) and os.path.basename(target).startswith(f".tmp-{name}.pth."):
            buffer = io.BytesIO()
            save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            _kill()
        return save(obj, f, *args, **kwargs)

    torch.save = patched


def _before_tag(name):
    # fvcore's Checkpointer.save calls tag_last_checkpoint once the .pth file is complete.
    tag = Checkpointer.tag_last_checkpoint

    def patched(self, basename):
        if basename == f"{name}.pth":
            _kill()
        return tag(self, basename)

    Checkpointer.tag_last_checkpoint = patched


def _during_evaluation(n):
    import detectron2.engine.defaults as defaults

    inference = defaults.inference_on_dataset
    calls = []

    def patched(model, data_loader, evaluator):
        calls.append(1)
        if len(calls) == n:
            process = evaluator.process

            def process_then_kill(inputs, outputs):
                process(inputs, outputs)
                _kill()

            evaluator.process = process_then_kill
        return inference(model, data_loader, evaluator)

    defaults.inference_on_dataset = patched


FAULTS = {
    "iteration": lambda arg: _at_iteration(int(arg)),
    "checkpoint": _during_checkpoint_write,
    "tag": _before_tag,
    "eval": lambda arg: _during_evaluation(int(arg)),
}


if __name__ == "__main__":
    fault = os.environ.get("CT_LESION_FAULT", "")
    if fault:
        kind, _, arg = fault.partition(":")
        FAULTS[kind](arg)
    train_net = os.path.join(REPO, "tools", "train_net.py")
    sys.argv = [train_net] + sys.argv[1:]
    runpy.run_path(train_net, run_name="__main__")
