"""train.py: not implemented yet (arrives with the training pipeline)."""
import sys

if __name__ == "__main__":
    print("error: train.py is not implemented yet; see README (Status)", file=sys.stderr)
    sys.exit(2)
