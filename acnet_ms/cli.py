"""What every entry point shares: user errors as one line, a quiet and clean exit."""
import argparse
import gc
import os
import sys


class UserError(Exception):
    """A problem with the user's input: reported as one line, exit status 2, no traceback."""


def first_line(err):
    """The first line of an exception's message (its type's name if the message is empty)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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


def run(main, argv=None):
    """Run ``main(argv)`` and exit with its status.

    A :class:`UserError` prints ``error: <message>`` on stderr and exits 2.
    Everything ``main`` built is released and collected while the interpreter
    is still whole, so no Cell finalizer complains at exit.
    """
    try:
        code = main(argv) or 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    gc.collect()
    sys.stdout.flush()
    sys.exit(code)
