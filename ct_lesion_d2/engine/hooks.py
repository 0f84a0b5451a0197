"""Training hooks of the project."""
import random

import numpy as np
import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

from ..data.build import derived_seed

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
