"""Kernel analyses of trained checkpoints (ACNet's Fig. 6 and 7, and inputs flipped or rotated).

    python analyze.py magnitude  --ckpt_path A.ckpt [B.ckpt ...] [--labels a b ...] [--out DIR]
    python analyze.py sparsity   --ckpt_path A.ckpt [...] --data_dir DATA [--ratios 0 0.1 ... 0.9]
                                 [--seeds 0 1 2] [--groups skeleton corner all]
    python analyze.py robustness --ckpt_path A.ckpt [...] --data_dir DATA
    python analyze.py quantization --ckpt_path A.ckpt [...] --data_dir DATA [--calib_data DIR]
                                 [--calib_samples N] [--calib_method minmax|entropy|percentile]

Each writes <sub-command>.json and <sub-command>.png into --out (default
analysis_out/) and prints a table.  Every checkpoint form works: ACB training
(folded in memory), plain, fully folded (convert.py --fold_bn) and stock MindCV
checkpoints without metadata (name their model with --model).  Any other
option is validate.py's (--model, --num_classes, --data_dir, --val_list,
--image_resize, --batch_size, --config FILE, ...; see python validate.py -h)
and applies to every checkpoint over what it recorded.  The figures need
matplotlib: pip install -r requirements-study.txt; quantization needs onnx and
onnxruntime: pip install -r requirements-onnx.txt.  See docs/analysis.md.
"""
import argparse
import os
import sys
import textwrap

from ..analysis import COMMANDS, DEFAULT_RATIOS, DEFAULT_SEEDS, GROUPS
from ..cli import ArgumentParser, UserError, quiet_mindspore, run
from ..kinds.table import load_kinds

#: what each sub-command computes (its help line)
ABOUT = {"magnitude": "mean |kernel| per k x k position, per layer normalised (Fig. 7); no data needed",
         "sparsity": "top-1 with a fraction of the skeleton / corner / all kernel entries zeroed (Fig. 6)",
         "robustness": "top-1 on the validation images as they are, flipped and rotated",
         "quantization": "INT8 weight SQNR and range per folded layer; FP32 and INT8 (onnxruntime) top-1"}

VALIDATE_OPTIONS = textwrap.fill(
    "Any other option is validate.py's and applies to every checkpoint over what it recorded (--model, "
    "--num_classes, --data_dir, --val_list, --image_resize, --batch_size, --config FILE, ...; "
    "see python validate.py --help).", 79)


def _numbers(values, kind, option):
    out = []
    for value in values:
        for part in str(value).split(","):
            if part.strip():
                try:
                    out.append(kind(part))
                except ValueError:
                    raise UserError(f"{option}: {part.strip()!r} is not a{'n integer' if kind is int else ' number'}") \
                        from None
    return out


def make_parser(command=None):
    """The options of ``command`` (of every sub-command if None, with the sub-command as an argument)."""
    prog = "analyze.py" if command is None else f"analyze.py {command}"
    parser = ArgumentParser(prog=prog, add_help=False, allow_abbrev=False, epilog=VALIDATE_OPTIONS if command else None,
                            description=__doc__ if command is None else ABOUT[command],
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            usage=f"%(prog)s{' {' + ','.join(COMMANDS) + '}' if command is None else ''} "
                                  f"--ckpt_path CKPT [CKPT ...] [options] [validate.py options]")
    if command is None:
        parser.add_argument("command", choices=COMMANDS, metavar="{" + ",".join(COMMANDS) + "}",
                            help="; ".join(f"{c}: {ABOUT[c]}" for c in COMMANDS))
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    parser.add_argument("--ckpt_path", nargs="+", default=None, metavar="CKPT",
                        help="one or several checkpoints (any form: ACB, plain, fully folded, stock MindCV)")
    parser.add_argument("--labels", nargs="+", default=None, metavar="LABEL",
                        help="one name per checkpoint for the table and figure (default: the file names)")
    parser.add_argument("--out", default="analysis_out", metavar="DIR",
                        help="folder for <sub-command>.json and .png (default: analysis_out)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the <sub-command>.json and .png that --out already holds")
    shown = command in (None, "sparsity")  # parsed for every sub-command, to say where they apply
    sparsity = "sparsity only: " if command is None else ""
    parser.add_argument("--ratios", nargs="+", default=None, metavar="R",
                        help=f"{sparsity}fractions of entries to zero (default: "
                             f"{' '.join(f'{r:g}' for r in DEFAULT_RATIOS)})" if shown else argparse.SUPPRESS)
    parser.add_argument("--seeds", nargs="+", default=None, metavar="S",
                        help=f"{sparsity}random seeds to average over (default: "
                             f"{' '.join(map(str, DEFAULT_SEEDS))})" if shown else argparse.SUPPRESS)
    parser.add_argument("--groups", nargs="+", default=None, metavar="G",
                        help=f"{sparsity}kernel positions to zero: {', '.join(GROUPS)} (default: {' '.join(GROUPS)})"
                        if shown else argparse.SUPPRESS)
    shown = command in (None, "quantization")
    quant = "quantization only: " if command is None else ""
    parser.add_argument("--calib_data", default=None, metavar="DIR",
                        help=f"{quant}calibration images DIR/<class>/<image> (default: data_dir/train_split)"
                        if shown else argparse.SUPPRESS)
    parser.add_argument("--calib_samples", default=None, metavar="N",
                        help=f"{quant}calibration images, spread evenly over DIR (default 256)"
                        if shown else argparse.SUPPRESS)
    parser.add_argument("--calib_method", default=None, metavar="M",
                        help=f"{quant}activation ranges: minmax, entropy or percentile (default minmax)"
                        if shown else argparse.SUPPRESS)
    return parser


def parse(argv):
    """(command, our arguments, the rest: validate.py's options)."""
    if not argv or argv[0] in ("-h", "--help"):
        make_parser().print_help()
        return None, None, None
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        raise UserError(f"analyze.py: unknown sub-command {command!r}; choose from {', '.join(COMMANDS)}")
    parser = make_parser(command)
    args, rest = parser.parse_known_args(rest)
    if args.help or any(a in ("-h", "--help") for a in rest):
        parser.print_help()
        return None, None, None
    if not args.ckpt_path:
        raise UserError("--ckpt_path is required (one or several checkpoint files)")
    if args.labels is not None and len(args.labels) != len(args.ckpt_path):
        n = len(args.ckpt_path)
        raise UserError(f"--labels: {len(args.labels)} labels for {n} checkpoint{'s' if n != 1 else ''}")
    if args.labels is not None and len(set(args.labels)) != len(args.labels):
        dup = next(x for x in args.labels if args.labels.count(x) > 1)
        raise UserError(f"--labels: {dup!r} is given twice")
    if command != "sparsity":
        given = [n for n in ("ratios", "seeds", "groups") if getattr(args, n) is not None]
        if given:
            raise UserError(f"--{given[0]} applies to the sparsity sub-command only")
    if command != "quantization":
        given = [n for n in ("calib_data", "calib_samples", "calib_method") if getattr(args, n) is not None]
        if given:
            raise UserError(f"--{given[0]} applies to the quantization sub-command only")
    return command, args, rest


def main(argv=None):
    quiet_mindspore()  # before anything imports MindSpore (a block-kind module may)
    load_kinds()  # a block-kind module that does not import: one line, whatever the arguments
    argv = sys.argv[1:] if argv is None else list(argv)
    command, args, rest = parse(argv)
    if command is None:
        return 0
    from .. import analysis

    kwargs = {}
    if command == "sparsity":
        ratios = _numbers(args.ratios, float, "--ratios") if args.ratios else analysis.DEFAULT_RATIOS
        analysis.check_ratios(ratios)
        seeds = _numbers(args.seeds, int, "--seeds") if args.seeds else analysis.DEFAULT_SEEDS
        if any(s < 0 for s in seeds):
            raise UserError(f"--seeds: {min(seeds)} is negative")
        groups = args.groups or analysis.GROUPS
        for g in groups:
            if g not in analysis.GROUPS:
                raise UserError(f"--groups: unknown position group {g!r}; choose from {', '.join(analysis.GROUPS)}")
        kwargs = dict(ratios=ratios, seeds=seeds, groups=groups)
    if command == "quantization":
        samples = _numbers([args.calib_samples], int, "--calib_samples")[0] if args.calib_samples else None
        if samples is not None and samples < 1:
            raise UserError(f"--calib_samples: {samples} is not positive")
        kwargs = dict(calib_data=args.calib_data, calib_samples=samples, calib_method=args.calib_method or "minmax")
    earlier = [os.path.join(args.out, f"{command}{ext}") for ext in (".json", ".png")]
    earlier = [p for p in earlier if os.path.exists(p)]
    if earlier and not args.overwrite:
        raise UserError(f"{earlier[0]} exists (results of an earlier analysis); choose another --out, or pass "
                        f"--overwrite to replace them")
    analysis.require_matplotlib()
    quiet_mindspore()
    labels = args.labels or _default_labels(args.ckpt_path)
    subjects = [analysis.load_subject(path, label, rest) for path, label in zip(args.ckpt_path, labels)]
    result = getattr(analysis, command)(subjects, **kwargs)
    paths = analysis.write(result, args.out)
    print(analysis.table(result))
    print(f"wrote {' and '.join(paths)}")
    return 0


def _default_labels(paths):
    """File names without .ckpt; the paths as given where two files share a name."""
    import os

    names = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    return [n if names.count(n) == 1 else p for n, p in zip(names, paths)]


if __name__ == "__main__":
    run(main)
