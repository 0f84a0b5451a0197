"""What training writes where: everything in ``OUTPUT_DIR/log.txt``, a short terminal.

Detectron2's ``default_setup`` logs the environment, the command line, the config file and the
full config (both highlighted with ANSI colour codes, which then reach the log file too), and
``DefaultTrainer`` logs the whole model: some 550 lines before iteration 0. Here
:func:`quiet_default_setup` runs ``default_setup`` unchanged with the handlers of Detectron2's
``setup_logger`` configured first, so that

- the log file gets every line, with the colour codes removed (:class:`PlainFormatter`);
- the terminal gets warnings and errors, and the tool's own lines (:data:`TRAIN_LOGGER`: what
  is trained, where the log is, the results), unless ``verbose`` (``--verbose``), which shows
  everything as Detectron2 would.
"""

import logging
import re
import sys

from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

__all__ = ["TRAIN_LOGGER", "PlainFormatter", "log_results", "quiet_default_setup"]

# The logger of the tool's own terminal lines.
TRAIN_LOGGER = "ct_lesion_d2.train"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# The format of Detectron2's log file (its setup_logger's plain formatter).
_FILE_FORMAT = "[%(asctime)s] %(name)s %(levelname)s: %(message)s"


class PlainFormatter(logging.Formatter):
    """Detectron2's log-file format, without ANSI escape codes (the config is highlighted by
    Detectron2 inside the message, so every handler would otherwise write them)."""

    def __init__(self):
        super().__init__(_FILE_FORMAT, datefmt="%m/%d %H:%M:%S")

    def format(self, record):
        return _ANSI.sub("", super().format(record))


class _TerminalFilter(logging.Filter):
    """Warnings, errors and :data:`TRAIN_LOGGER`'s lines; everything when ``verbose``."""

    def __init__(self, verbose):
        super().__init__()
        self.verbose = verbose

    def filter(self, record):
        return (
            self.verbose
            or record.levelno >= logging.WARNING
            or record.name == TRAIN_LOGGER
            or record.name.startswith(TRAIN_LOGGER + ".")
        )


def _is_terminal(handler):
    stream = getattr(handler, "stream", None)
    return stream is not None and stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)


def _configure(logger, verbose):
    """Filter the terminal handlers of ``logger`` and make its file output plain (idempotent)."""
    for handler in logger.handlers:
        terminal = _is_terminal(handler)
        if terminal and not any(isinstance(f, _TerminalFilter) for f in handler.filters):
            handler.addFilter(_TerminalFilter(verbose))
        tty = terminal and getattr(handler.stream, "isatty", lambda: False)()
        if not tty and not isinstance(handler.formatter, PlainFormatter):
            handler.setFormatter(PlainFormatter())


def quiet_default_setup(cfg, args, verbose=False):
    """Detectron2's ``default_setup`` with its preamble in the log file only.

    The loggers ``default_setup`` sets up ("fvcore", "detectron2") are made first, by the
    same ``setup_logger`` calls, which Detectron2 caches so that repeating them adds no
    handler; ``default_setup`` then reuses them. The package's logger ("ct_lesion_d2") writes
    to the same ``log.txt``. Should a Detectron2 version set its loggers up differently, the
    handlers made here are removed again (each line is written once; the preamble is then
    shown as before).

    Args:
        cfg (CfgNode): the frozen config (``OUTPUT_DIR``).
        args (argparse.Namespace): the command line (logged by ``default_setup``).
        verbose (bool): show every line on the terminal, as Detectron2 does.
    """
    rank = comm.get_rank()
    output = cfg.OUTPUT_DIR
    # the calls of default_setup, argument for argument (setup_logger's cache key)
    early = [
        setup_logger(output, distributed_rank=rank, name="fvcore"),
        setup_logger(output, distributed_rank=rank),
    ]
    made = {id(logger): list(logger.handlers) for logger in early}
    for logger in early:
        _configure(logger, verbose)
    default_setup(cfg, args)
    for logger in early:
        if len(logger.handlers) > len(made[id(logger)]):
            for handler in made[id(logger)]:
                logger.removeHandler(handler)
        _configure(logger, verbose)
    _configure(setup_logger(output=output, distributed_rank=rank, name="ct_lesion_d2"), verbose)


def _fmt(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def log_results(results):
    """One terminal line per evaluation task (``bbox: AP 12.3, AP50 ...``); the tables are
    in the log file.

    Args:
        results (dict): ``{task: {metric: value}}``, or ``{dataset: {task: {metric: value}}}``
            as ``DefaultTrainer.test`` returns for several datasets.
    """
    logger = logging.getLogger(TRAIN_LOGGER)
    for key, value in (results or {}).items():
        if not isinstance(value, dict):
            continue
        if value and all(isinstance(v, dict) for v in value.values()):
            for task, metrics in value.items():
                line = ", ".join(f"{k} {_fmt(v)}" for k, v in metrics.items())
                logger.info(f"{key} {task}: {line}")
        else:
            logger.info(f"{key}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in value.items()))
