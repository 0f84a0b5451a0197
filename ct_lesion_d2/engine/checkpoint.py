"""Checkpoints that survive a kill at any moment.

Detectron2's ``DetectionCheckpointer`` writes ``model_*.pth`` and ``last_checkpoint`` in place,
so a run killed while saving leaves a truncated file that ``--resume`` then fails on (or a
``last_checkpoint`` naming it). Here each file is written to a temporary name in the same
folder, flushed to disk and renamed over the final name, so a checkpoint is either complete or
absent; and a resume skips a missing or unreadable file for the newest one that loads, saying so
in the log.
"""
import glob
import logging
import os
import re

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..data.io import atomic_write

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"
_PERIODIC = re.compile(r"^model_(\d+)\.pth$")
_TMP_PREFIX = ".tmp-"


class IncompleteCheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or not a checkpoint."""


def remove_stale_temporaries(folder):
    """Delete ``.tmp-*`` files that a killed save (``atomic_write``) left in ``folder``; returns
    their paths."""
    stale = sorted(glob.glob(os.path.join(folder, _TMP_PREFIX + "*")))
    for path in stale:
        logger.warning("Removing %s, left by a save that was interrupted", path)
        os.remove(path)
    return stale


class AtomicDetectionCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` with atomic saves and a resume that skips incomplete files.

    ``save`` writes ``<name>.pth`` and then ``last_checkpoint`` atomically, in that order, so
    ``last_checkpoint`` always names a complete file or an older one. With ``resume=True``,
    ``resume_or_load`` loads the first checkpoint of ``resume_candidates`` that reads as a
    complete checkpoint.
    """

    @classmethod
    def from_checkpointer(cls, checkpointer):
        """The same model, folder and checkpointables as ``checkpointer``, saved atomically."""
        return cls(
            checkpointer.model,
            checkpointer.save_dir,
            save_to_disk=checkpointer.save_to_disk,
            **checkpointer.checkpointables,
        )

    def save(self, name, **kwargs):
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        atomic_write(
            os.path.join(self.save_dir, LAST_CHECKPOINT),
            lambda f: f.write(last_filename_basename.encode("utf-8")),
        )

    def resume_candidates(self):
        """Checkpoints to resume from, in order: the file ``last_checkpoint`` names, then
        ``model_final.pth`` and the periodic ``model_NNNNNNN.pth``, newest iteration first.

        Returns:
            list[str]: paths, some possibly missing.
        """
        tagged = self.get_checkpoint_file() if self.has_checkpoint() else ""
        periodic = []
        for path in glob.glob(os.path.join(self.save_dir, "model_*.pth")):
            match = _PERIODIC.match(os.path.basename(path))
            if match:
                periodic.append((int(match.group(1)), path))
        ordered = [p for _, p in sorted(periodic, reverse=True)]
        final = os.path.join(self.save_dir, "model_final.pth")
        if os.path.isfile(final):
            ordered.insert(0, final)
        candidates = [tagged] if tagged else []
        return candidates + [p for p in ordered if p != tagged]

    def read_complete(self, path):
        """Load ``path`` as a training checkpoint.

        Raises:
            IncompleteCheckpointError: missing, unreadable, or without ``model`` and
                ``iteration``.
        """
        if not os.path.isfile(path):
            raise IncompleteCheckpointError(f"{path}: file not found")
        try:
            checkpoint = self._load_file(path)
        except Exception as e:
            raise IncompleteCheckpointError(
                f"{path}: unreadable ({type(e).__name__}: {e})"
            ) from None
        missing = [k for k in ("model", "iteration") if k not in checkpoint]
        if missing:
            raise IncompleteCheckpointError(f"{path}: not a training checkpoint (no {missing})")
        return checkpoint

    def resume_or_load(self, path, *, resume=True):
        """With ``resume``, load the newest complete checkpoint of ``save_dir`` with all its
        checkpointables (``resumed_from`` names it); without, or when there is none, load the
        model weights of ``path`` only.

        Raises:
            IncompleteCheckpointError: checkpoints exist but none is complete.
        """
        self.resumed_from = None
        if resume and os.path.isdir(self.save_dir):
            remove_stale_temporaries(self.save_dir)
        candidates = self.resume_candidates() if resume else []
        if not candidates:
            return self.load(path, checkpointables=[])
        problems = []
        for candidate in candidates:
            try:
                self._preloaded = (candidate, self.read_complete(candidate))
            except IncompleteCheckpointError as e:
                problems.append(str(e))
                self.logger.warning("Cannot resume from %s; trying an older checkpoint", e)
                continue
            if problems:
                self.logger.warning(
                    "Resuming from %s, the newest complete checkpoint (skipped: %s)",
                    candidate, "; ".join(problems),
                )
            self.resumed_from = candidate
            return self.load(candidate)
        raise IncompleteCheckpointError(
            f"--resume found checkpoints in {self.save_dir} but none is complete: "
            + "; ".join(problems)
            + ". Remove them to start again, or run without --resume."
        )

    def _load_file(self, filename):
        preloaded = getattr(self, "_preloaded", None)
        if preloaded is not None and preloaded[0] == filename:
            self._preloaded = None
            return preloaded[1]
        return super()._load_file(filename)
