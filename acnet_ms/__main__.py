"""``python -m acnet_ms --version``: the package, MindSpore, MindCV, Python and device target it runs on, and
whether the project has tested that combination (``acnet_ms.stack``)."""
import sys

USAGE = ("usage: python -m acnet_ms --version   (the versions this installation runs on, and whether they are "
         "a tested combination)")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["--version"]:
        print(USAGE, file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    from .stack import describe

    print(describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
