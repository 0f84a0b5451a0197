"""Checkpoints that survive a kill at any moment.

Detectron2's ``DetectionCheckpointer`` (fvcore's ``Checkpointer.save`` and
``tag_last_checkpoint``) writes ``model_*.pth`` and ``last_checkpoint`` in place, so a run killed
while saving leaves a truncated file that ``--resume`` then fails on (or a ``last_checkpoint``
naming it). Here the checkpointer's ``path_manager`` is an :class:`AtomicPathManager`: each file
opened for writing is a temporary file in the same folder, flushed to disk and renamed over the
final name when it is closed, so a checkpoint is either complete or absent, and fvcore's ``save``
(the ``.pth`` first, then ``last_checkpoint``) is used unchanged. A resume skips a missing or
unreadable file for the newest one that loads, saying so in the log.
"""

import glob
import logging
import os
import re
import tempfile

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils import comm

from ..utils.files import fsync_folder

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"
_PERIODIC = re.compile(r"^model_(\d+)\.pth$")
_TMP_PREFIX = ".tmp-"


class IncompleteCheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or not a checkpoint."""


class _AtomicFile:
    """A file written under ``.tmp-<name>.*`` and renamed onto ``path`` when the ``with`` block
    ends without an exception (removed when it ends with one)."""

    def __init__(self, path, mode):
        self.path = path
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        prefix = f"{_TMP_PREFIX}{os.path.basename(path)}."
        fd, self.tmp = tempfile.mkstemp(dir=folder, prefix=prefix)
        os.close(fd)
        self.file = open(self.tmp, mode)

    def __enter__(self):
        return self.file

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.file.flush()
                os.fsync(self.file.fileno())
        finally:
            self.file.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
            fsync_folder(os.path.dirname(os.path.abspath(self.path)))
        elif os.path.exists(self.tmp):
            os.remove(self.tmp)
        return False


class AtomicPathManager:
    """An iopath ``PathManager`` whose writes to local files are atomic (:class:`_AtomicFile`);
    every other call goes to ``base``.

    Args:
        base: the path manager to wrap (a checkpointer's ``path_manager``).
    """

    def __init__(self, base):
        self.base = base

    def open(self, path, mode="r", **kwargs):
        if "://" not in path and any(c in mode for c in "wax+"):
            return _AtomicFile(path, mode)
        return self.base.open(path, mode, **kwargs)

    def __getattr__(self, name):
        return getattr(self.base, name)


def make_atomic(checkpointer):
    """Give ``checkpointer`` (fvcore ``Checkpointer``) atomic writes through its public
    ``path_manager``; returns it."""
    if not isinstance(checkpointer.path_manager, AtomicPathManager):
        checkpointer.path_manager = AtomicPathManager(checkpointer.path_manager)
    return checkpointer


def remove_stale_temporaries(folder):
    """Delete ``.tmp-*`` files that a killed save left in ``folder``; returns their paths."""
    stale = sorted(glob.glob(os.path.join(folder, _TMP_PREFIX + "*")))
    for path in stale:
        logger.warning("Removing %s, left by a save that was interrupted", path)
        os.remove(path)
    return stale


def resume_candidates(checkpointer):
    """Checkpoints to resume from, in order: the file ``last_checkpoint`` names, then
    ``model_final.pth`` and the periodic ``model_NNNNNNN.pth``, newest iteration first.

    Returns:
        list[str]: paths, some possibly missing.
    """
    save_dir = checkpointer.save_dir
    tagged = checkpointer.get_checkpoint_file() if checkpointer.has_checkpoint() else ""
    periodic = []
    for path in glob.glob(os.path.join(save_dir, "model_*.pth")):
        match = _PERIODIC.match(os.path.basename(path))
        if match:
            periodic.append((int(match.group(1)), path))
    ordered = [p for _, p in sorted(periodic, reverse=True)]
    final = os.path.join(save_dir, "model_final.pth")
    if os.path.isfile(final):
        ordered.insert(0, final)
    candidates = [tagged] if tagged else []
    return candidates + [p for p in ordered if p != tagged]


def check_complete(path):
    """Read ``path`` as a training checkpoint.

    Raises:
        IncompleteCheckpointError: missing, unreadable, or without ``model`` and
            ``iteration``.
    """
    if not os.path.isfile(path):
        raise IncompleteCheckpointError(f"{path}: file not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise IncompleteCheckpointError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    missing = [
        k for k in ("model", "iteration") if not isinstance(checkpoint, dict) or k not in checkpoint
    ]
    if missing:
        raise IncompleteCheckpointError(f"{path}: not a training checkpoint (no {missing})")


def newest_complete_checkpoint(checkpointer):
    """The newest complete checkpoint in ``checkpointer.save_dir``, or None when there is none;
    skipped files are logged. In a distributed run every process gets process 0's choice.

    Raises:
        IncompleteCheckpointError: checkpoints exist but none is complete.
    """
    chosen, problems = None, []
    if comm.is_main_process() and os.path.isdir(checkpointer.save_dir):
        remove_stale_temporaries(checkpointer.save_dir)
    for candidate in resume_candidates(checkpointer):
        try:
            check_complete(candidate)
        except IncompleteCheckpointError as e:
            problems.append(str(e))
            logger.warning("Cannot resume from %s; trying an older checkpoint", e)
            continue
        chosen = candidate
        break
    if comm.get_world_size() > 1:
        chosen, problems = comm.all_gather((chosen, problems))[0]
    if chosen is None and problems:
        raise IncompleteCheckpointError(
            f"--resume found checkpoints in {checkpointer.save_dir} but none is complete: "
            + "; ".join(problems)
            + ". Remove them to start again, or run without --resume."
        )
    if chosen is not None and problems:
        logger.warning(
            "Resuming from %s, the newest complete checkpoint (skipped: %s)",
            chosen,
            "; ".join(problems),
        )
    return chosen


def resume_or_load(checkpointer, path, *, resume=True):
    """With ``resume``, load the newest complete checkpoint of ``save_dir`` with all its
    checkpointables; without, or when there is none, load the model weights of ``path`` only.

    Returns:
        str or None: the checkpoint resumed from (None when ``path`` was loaded).

    Raises:
        IncompleteCheckpointError: checkpoints exist but none is complete.
    """
    chosen = newest_complete_checkpoint(checkpointer) if resume else None
    if chosen is None:
        checkpointer.load(path, checkpointables=[])
    else:
        checkpointer.load(chosen)
    return chosen


class AtomicDetectionCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` with atomic writes (:func:`make_atomic`) and a resume that
    skips incomplete files (:func:`resume_or_load`; ``resumed_from`` names the file)."""

    def __init__(self, model, save_dir="", **kwargs):
        super().__init__(model, save_dir, **kwargs)
        make_atomic(self)
        self.resumed_from = None

    def resume_or_load(self, path, *, resume=True):
        self.resumed_from = resume_or_load(self, path, resume=resume)
