"""``python -m acnet_ms.models``: the names ``--model`` takes (ours and MindCV's), one a line."""
import sys

from .registry import list_models


def main(argv=None):
    if argv is None:
        argv = sys.argv[1:]
    if argv:
        print("usage: python -m acnet_ms.models   (prints every model name --model takes, one a line)",
              file=sys.stderr)
        return 0 if argv[0] in ("-h", "--help") else 2
    print("\n".join(list_models()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
