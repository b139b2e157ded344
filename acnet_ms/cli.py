"""What every entry point shares: user errors as one line, a quiet and clean exit."""
import argparse
import gc
import os
import sys
import tempfile


class UserError(Exception):
    """A problem with the user's input: reported as one line, exit status ``code`` (2), no traceback."""

    def __init__(self, message, code=2):
        super().__init__(message)
        self.code = code


class Interrupted(UserError):
    """The run was stopped by a signal: its one line (where it stood) is printed as it is."""


def first_line(err):
    """The first line of an exception's message (its type's name if the message is empty).

    MindSpore's framework errors open with rules (``-----``) and headings
    (``- Kernel select failed:``): the first line of the message proper is taken,
    without MindSpore's advice to confirm the device target.
    """
    for line in str(err).splitlines():
        line = line.strip()
        if not line or set(line) <= set("-= ") or (line.startswith("- ") and line.endswith(":")):
            continue
        return line.split(", Please confirm")[0]
    return type(err).__name__


TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_bool(value):
    """The one reading of a yes/no value, for the command line, YAML and block options alike: a bool, or
    (any case) true/1/yes/on and false/0/no/off, as text or as the YAML numbers 1 and 0; ValueError else."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ValueError(f"expected True or False, got {value!r}")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors as one line (``error: ...``, exit 2) like every other user error."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}")


def quiet_mindspore():
    """Keep MindSpore's own loggers to critical messages (set before importing it).

    Errors reach the user through exceptions, which the entry points turn
    into one line each; MindSpore would log the same failure again in its
    own format.  ``GLOG_v=2`` (or lower) in the environment brings its logs back.
    """
    os.environ.setdefault("GLOG_v", "4")
    # OpenCV (MindSpore's image decoders) prints its own "[ WARN...]" line for a damaged image: the error names it
    os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT" if os.environ["GLOG_v"] > "2" else "WARNING")
    # MindSpore writes its report of a failed compilation under ./rank_N/om/: keep the user's folder clean
    os.environ.setdefault("MS_DEV_SAVE_GRAPHS_PATH", os.path.join(tempfile.gettempdir(), "acnet_ms-graphs"))


def run(main, argv=None):
    """Run ``main(argv)`` and exit with its status.

    On a MindSpore and MindCV the project has not tested, one warning line
    comes first (:func:`acnet_ms.stack.warning`).
    A :class:`UserError` prints ``error: <message>`` on stderr and exits 2 (an
    :class:`Interrupted` prints its line and exits 128 + the signal's number).
    Everything ``main`` built is released and collected while the interpreter
    is still whole, so no Cell finalizer complains at exit.
    """
    from .stack import warning

    untested = warning()  # a MindSpore/MindCV pair the project has not run: one line, never a refusal
    if untested:
        print(untested, file=sys.stderr)
    try:
        code = main(argv) or 0
    except Interrupted as err:
        print(err, file=sys.stderr)
        code = err.code
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        code = err.code
    except KeyboardInterrupt:
        print("stopped by SIGINT", file=sys.stderr)
        code = 130
    gc.collect()
    sys.stdout.flush()
    sys.exit(code)
