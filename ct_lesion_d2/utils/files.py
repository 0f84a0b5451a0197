"""Files written so that an interruption never leaves a half-written one: atomic single files,
staged groups of files and staged folders, and the refusal to replace existing output.

Used by every part of the package that writes (converters, checkpoints, evaluation, exports,
reports); the readers of CT data are in ``ct_lesion_d2.data``.
"""

import glob
import json
import os
import shutil
import tempfile

__all__ = [
    "StagedFolder",
    "StagedWrites",
    "atomic_write",
    "recover_folder",
    "refuse_existing",
    "write_json_atomic",
]


def fsync_folder(folder):
    """Flush a folder entry (a rename) to disk where the OS allows it."""
    # A rename is durable once the folder entry is on disk; not every OS lets a folder be synced.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class StagedWrites:
    """Files written to temporary names next to their targets, then renamed onto them together.

    ``stage`` writes and flushes a file under a hidden ``.tmp-<name>.*`` name; ``commit`` renames
    every staged file onto its target (``os.replace``, atomic per file); ``discard`` (or leaving a
    ``with`` block by an exception) removes them. Until ``commit``, an interruption leaves every
    target as it was; a file is never seen half-written.
    """

    def __init__(self):
        self._staged = []  # (temporary path, target)

    def stage(self, path, write, mode="wb"):
        """Write the content of ``path`` with ``write(file)`` to a temporary file."""
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".tmp-{os.path.basename(path)}.")
        os.close(fd)
        self._staged.append((tmp, path))
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def commit(self):
        """Rename every staged file onto its target, in the order they were staged."""
        folders = set()
        while self._staged:
            tmp, path = self._staged.pop(0)
            os.replace(tmp, path)
            folders.add(os.path.dirname(os.path.abspath(path)))
        for folder in folders:
            fsync_folder(folder)

    def discard(self):
        """Remove the staged files that were not committed."""
        for tmp, _ in self._staged:
            if os.path.exists(tmp):
                os.remove(tmp)
        self._staged = []

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.discard()
        return False


class StagedFolder:
    """A folder whose new content is written beside it and then swapped in.

    ``path`` is a hidden sibling (``.tmp-<name>.*``) to write into; ``commit`` moves any existing
    folder aside (``.old-<name>.*``), renames the staged one into place and deletes the old one;
    leaving a ``with`` block by an exception without ``commit`` deletes the staged folder. A run
    killed before ``commit`` leaves the old folder in place (and a ``.tmp-`` sibling); one killed
    between the two renames leaves the old folder as ``.old-<name>.*``, which
    ``recover_folder`` puts back.
    """

    def __init__(self, final):
        self.final = os.path.abspath(final)
        parent, name = os.path.split(self.final)
        os.makedirs(parent, exist_ok=True)
        self.path = tempfile.mkdtemp(dir=parent, prefix=f".tmp-{name}.")

    def commit(self):
        """Replace ``final`` (if any) by the staged folder."""
        parent, name = os.path.split(self.final)
        old = None
        if os.path.lexists(self.final):
            old = tempfile.mkdtemp(dir=parent, prefix=f".old-{name}.")
            os.rmdir(old)
            os.rename(self.final, old)
        os.rename(self.path, self.final)
        fsync_folder(parent)
        if old is not None:
            shutil.rmtree(old)
        self.path = None

    def discard(self):
        if self.path is not None and os.path.isdir(self.path):
            shutil.rmtree(self.path)
        self.path = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.discard()
        return False


def recover_folder(final):
    """Undo what a run killed inside ``StagedFolder`` left next to ``final``: put back an old
    folder moved aside when ``final`` is missing, and delete staged (``.tmp-``) folders and
    moved-aside ones made obsolete by a complete ``final``.

    Returns:
        list[str]: what was done, one line per folder, for the log.
    """
    final = os.path.abspath(final)
    parent, name = os.path.split(final)
    if not os.path.isdir(parent):
        return []
    done = []
    olds = sorted(glob.glob(os.path.join(parent, glob.escape(f".old-{name}.") + "*")))
    if olds and not os.path.lexists(final):
        os.rename(olds[-1], final)
        done.append(f"restored {final} from {olds[-1]}, left by an interrupted run")
        olds = olds[:-1]
    staged = sorted(glob.glob(os.path.join(parent, glob.escape(f".tmp-{name}.") + "*")))
    for leftover in olds + staged:
        if os.path.isdir(leftover):
            shutil.rmtree(leftover)
        else:
            os.remove(leftover)
        done.append(f"removed {leftover}, left by an interrupted run")
    return done


def refuse_existing(paths, overwrite=False):
    """Raise ``FileExistsError`` naming the first of ``paths`` that exists, unless ``overwrite``;
    called before any work so that nothing is half done when an output is refused."""
    if overwrite:
        return
    existing = [p for p in paths if os.path.exists(p)]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise FileExistsError(f"{existing[0]} exists{more}; pass --overwrite to replace it")


def atomic_write(path, write, mode="wb"):
    """Create or replace ``path`` through a temporary file in its folder and ``os.replace``, so
    an interruption leaves either the previous file or the complete new one."""
    with StagedWrites() as staged:
        staged.stage(path, write, mode)
        staged.commit()


def write_json_atomic(obj, path, overwrite=False):
    """Write JSON to ``path`` through a temporary file and a rename, so that an interruption
    leaves either the old file or the complete new one.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
    """
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    atomic_write(path, lambda f: json.dump(obj, f), mode="w")
