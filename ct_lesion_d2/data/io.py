"""The error every reader and loader of the package raises: it names the file and the problem."""


class DatasetFormatError(ValueError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file."""

    def __init__(self, path, problem):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


# The atomic writers moved to ct_lesion_d2.utils.files; this name stays importable from here
# for engine/checkpoint.py (being rewritten under issue 13), to be dropped once it imports them.
from ..utils.files import atomic_write  # noqa: E402,F401
