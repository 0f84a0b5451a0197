"""Training hooks of the project."""

import logging
import math
import random
import sys

import numpy as np
import torch
from detectron2.engine import HookBase
from detectron2.utils import comm
from torch.optim.swa_utils import AveragedModel

from ..data.build import derived_seed
from ..utils import unwrap_model

logger = logging.getLogger(__name__)

# Key of the model's seed sequence (the data streams use others, see data/build.py).
_MODEL_STREAM = 3


class IterationSeed(HookBase):
    """Seed the global generators before each iteration from ``(seed, rank, iteration)``.

    The random draws of an iteration (proposal and RoI sampling, dropout) then do not depend on
    what ran before it, so a run resumed from a checkpoint makes the same draws as the
    uninterrupted run; evaluation and checkpointing between iterations cannot shift them either.
    """

    def __init__(self, seed):
        self._seed = int(seed)

    def before_step(self):
        seed = derived_seed(self._seed, _MODEL_STREAM, comm.get_rank(), self.trainer.iter)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message names the iteration, the losses and the last
    good checkpoint."""

    def __init__(self, iteration, losses, last_checkpoint=None):
        values = ", ".join(f"{k}={v:.6g}" for k, v in sorted(losses.items()))
        bad = sorted(k for k, v in losses.items() if not math.isfinite(v))
        where = (
            f"the last good checkpoint, {last_checkpoint}, is untouched (resume from it with "
            "--resume)"
            if last_checkpoint
            else "no checkpoint had been written"
        )
        super().__init__(
            f"Loss became non-finite at iteration {iteration}: {', '.join(bad) or 'total'} "
            f"({values}). Training stopped before the optimizer step and no checkpoint was "
            f"written after it; {where}. Lower SOLVER.BASE_LR, raise SOLVER.WARMUP_ITERS or "
            "check the data (tools/validate_dataset.py)."
        )
        self.iteration = iteration
        self.losses = dict(losses)
        self.last_checkpoint = last_checkpoint


class NonFiniteLossCheck(HookBase):
    """Stop training with :class:`NonFiniteLossError` when a loss of the model's forward pass is
    NaN or infinite, before the backward pass and so before the optimizer step.

    The check is a forward hook on the trainer's model (PyTorch's ``register_forward_hook``),
    registered for the duration of training. In a distributed run the processes agree through
    one ``all_reduce`` per iteration, so all of them stop at the same iteration (Detectron2's
    own check runs on process 0 only, after the backward pass).

    Args:
        checkpointer: names the last good checkpoint in the message.
    """

    def __init__(self, checkpointer):
        self._checkpointer = checkpointer
        self._handle = None

    def before_train(self):
        self._handle = self.trainer.model.register_forward_hook(self._check)

    def after_train(self):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _check(self, module, inputs, output):
        if not module.training or not isinstance(output, dict):
            return
        finite = all(bool(torch.isfinite(v).all()) for v in output.values())
        if comm.get_world_size() > 1:
            flag = torch.tensor([0 if finite else 1], dtype=torch.int32)
            torch.distributed.all_reduce(flag)
            finite = int(flag.item()) == 0
        if finite:
            return
        losses = {k: float(v.detach().float().sum().cpu()) for k, v in output.items()}
        last = (
            self._checkpointer.get_checkpoint_file()
            if self._checkpointer.has_checkpoint()
            else None
        )
        raise NonFiniteLossError(self.trainer.iter, losses, last)


class UnlessFailed(HookBase):
    """Run ``hook`` as registered, except its ``after_train`` when a step failed.

    ``TrainerBase.train`` leaves ``iter`` at ``max_iter`` only when every step ran; Detectron2's
    ``EvalHook`` evaluates in ``after_train`` also when the failed step was the last one.
    Only for hooks without state (``EvalHook``): a state would be saved under this class's name.
    """

    def __init__(self, hook):
        self.hook = hook

    def before_train(self):
        self.hook.trainer = self.trainer
        self.hook.before_train()

    def before_step(self):
        self.hook.before_step()

    def after_backward(self):
        getattr(self.hook, "after_backward", lambda: None)()

    def after_step(self):
        self.hook.after_step()

    def after_train(self):
        if self.trainer.iter >= self.trainer.max_iter:
            self.hook.after_train()


class TrainingProgress(HookBase):
    """A tqdm bar over the training iterations (iteration of ``max_iter``, total loss), on the
    main process only, and only where stderr is a terminal unless asked.

    Detectron2's periodic metric lines stay in the log (``PeriodicWriter``); this is the
    terminal's view of the same run.

    Args:
        enabled (bool or None): show the bar (True), never (False), or where stderr is a
            terminal (None).
    """

    def __init__(self, enabled=None):
        self._enabled = enabled
        self._bar = None

    def before_train(self):
        shown = sys.stderr.isatty() if self._enabled is None else self._enabled
        if not shown or not comm.is_main_process():
            return
        from tqdm import tqdm

        self._bar = tqdm(
            total=self.trainer.max_iter,
            initial=self.trainer.start_iter,
            desc="training",
            unit="iter",
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def after_step(self):
        if self._bar is None:
            return
        loss = self.trainer.storage.latest().get("total_loss")
        if loss is not None:
            self._bar.set_postfix(total_loss=f"{loss[0]:.4g}", refresh=False)
        self._bar.update(1)

    def after_train(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class WeightAverage(HookBase):
    """Stochastic weight averaging (``SOLVER.SWA``; Izmailov et al. 2018): the mean of the
    model's weights over the last part of training, kept by PyTorch's ``AveragedModel``.

    From iteration ``start_iter`` on, after every optimizer step, the average takes in the
    model's parameters and buffers (the BatchNorm statistics too: ``use_buffers``). After the
    last iteration's step it is loaded into the trainer's model, so ``model_final.pth``, the
    final evaluation and an export hold the average; evaluations during training see the
    current weights. The average is part of the trainer's checkpoints (``state_dict``), so a
    resumed run continues it. Register it before ``PeriodicCheckpointer`` and ``EvalHook``:
    their ``after_step`` of the last iteration must see the average.

    Args:
        start_iter (int): the first iteration whose weights join the average.
    """

    def __init__(self, start_iter):
        self.start_iter = int(start_iter)
        self._average = None  # from before_train until the model holds the average
        self._resumed = None

    def before_train(self):
        self._average = AveragedModel(unwrap_model(self.trainer.model), use_buffers=True)
        if self._resumed is not None:
            self._average.load_state_dict(self._resumed)
            self._resumed = None
        elif self.trainer.start_iter > self.start_iter:
            # resumed from a checkpoint written before the average started, or without SWA
            logger.warning(
                "SOLVER.SWA: the checkpoint resumed from holds no weight average, so the "
                "average starts at iteration %d instead of %d",
                self.trainer.start_iter,
                self.start_iter,
            )

    def after_step(self):
        if self.trainer.iter < self.start_iter:
            return
        module = unwrap_model(self.trainer.model)
        self._average.update_parameters(module)
        if self.trainer.iter == self.trainer.max_iter - 1:
            current = module.state_dict()
            # AveragedModel keeps integer buffers (BatchNorm's num_batches_tracked) as first
            # copied: the model keeps its own
            averaged = {
                k: v if v.is_floating_point() else current[k]
                for k, v in self._average.module.state_dict().items()
            }
            module.load_state_dict(averaged)
            self._average = None  # the model holds it: nothing more to keep or checkpoint

    @property
    def num_averaged(self):
        """How many iterations' weights the average holds (0 before it starts and once the
        model holds it)."""
        return 0 if self._average is None else int(self._average.n_averaged)

    def state_dict(self):
        # Nothing to save before the average starts, or once the model holds it.
        if self.num_averaged == 0:
            return {}
        return self._average.state_dict()

    def load_state_dict(self, state_dict):
        # The trainer loads checkpoints before training starts, before the average exists.
        self._resumed = state_dict
