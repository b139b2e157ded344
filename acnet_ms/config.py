"""Options: one table with defaults, YAML sets new defaults, the command line overrides.

Option names are MindCV's wherever MindCV has the option, so its users can
read our configs as they are; ``block_type``, ``gamma_init``, ``jit_level``,
``device_target``, ``resume``, ``train_list`` and ``val_list`` are ours.  A
key that no option knows is an error that suggests the closest valid name.
"""
import argparse
import difflib
import os

from .cli import ArgumentParser, UserError, first_line


def _bool(value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected True or False, got {value!r}")


def _floats(value):
    if isinstance(value, str):
        value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
    return [float(v) for v in value]


def _opt_float(value):
    return None if value is None or str(value).lower() in ("none", "null", "") else float(value)


def _opt_str(value):
    return None if value is None or str(value).lower() in ("none", "null", "") else str(value)


# name: (default, parser, choices or None, help)
OPTIONS = {
    # system
    "mode": (0, int, (0, 1), "0: graph mode, 1: PyNative"),
    "distribute": (False, _bool, None, "data-parallel training under msrun"),
    "device_target": (None, _opt_str, (None, "Ascend", "GPU", "CPU"), "default: what this MindSpore build runs on"),
    "jit_level": ("O2", str, ("O0", "O1", "O2"), "graph compile level (O2: Ascend whole-graph sinking)"),
    "seed": (42, int, None, "random seed (weights, data order)"),
    # model
    "model": ("sres18", str, None, "registered model name"),
    "block_type": ("base", str, ("base", "acb"), "plain conv + BN, or ACBs"),
    "num_classes": (1000, int, None, "classifier outputs; must agree with the data"),
    "gamma_init": (None, _opt_float, None, "initial gamma of the ACBs' three BNs (default 1)"),
    "ckpt_path": (None, _opt_str, None, "checkpoint to start from (finetuning) or to validate"),
    "resume": (None, _opt_str, None, "checkpoint to resume training from (weights, optimizer, epoch, step)"),
    # data
    "dataset": ("imagenet", str, ("imagenet", "cifar10"), "imagenet: an ImageFolder tree; cifar10: binary CIFAR-10"),
    "data_dir": (None, _opt_str, None, "dataset root"),
    "train_split": ("train", str, None, "sub-folder of data_dir with the training images"),
    "val_split": ("val", str, None, "sub-folder of data_dir with the validation images"),
    "train_list": (None, _opt_str, None, "optional list file 'relative/path label' per line (under data_dir)"),
    "val_list": (None, _opt_str, None, "optional list file 'relative/path label' per line (under data_dir)"),
    "num_parallel_workers": (8, int, None, "data pipeline workers"),
    "batch_size": (32, int, None, "per-device batch size"),
    "image_resize": (224, int, None, "network input size"),
    "scale": ([0.08, 1.0], _floats, None, "random resized crop area range"),
    "ratio": ([0.75, 1.333], _floats, None, "random resized crop aspect range"),
    "hflip": (0.5, float, None, "horizontal flip probability"),
    "interpolation": ("bilinear", str, ("bilinear", "bicubic", "nearest", "area"), "resize interpolation"),
    "crop_pct": (0.875, float, None, "eval: centre crop / resize ratio"),
    # optimization
    "opt": ("momentum", str, None, "optimizer name as in mindcv.optim.create_optimizer"),
    "lr": (0.1, float, None, "peak learning rate"),
    "min_lr": (0.0, float, None, "learning rate at the end of the cosine"),
    "momentum": (0.9, float, None, "optimizer momentum"),
    "nesterov": (False, _bool, None, "Nesterov momentum"),
    "weight_decay": (1e-4, float, None, "weight decay"),
    "weight_decay_filter": ("disable", str, ("disable", "auto", "norm_and_bias"), "MindCV's weight decay filter"),
    "scheduler": ("cosine_decay", str, ("cosine_decay", "warmup_cosine_decay", "constant", "step_decay",
                                        "multi_step_decay", "exponential_decay", "polynomial_decay"),
                  "learning rate schedule"),
    "warmup_epochs": (0, int, None, "linear warm-up epochs"),
    "warmup_factor": (0.0, float, None, "learning rate factor at the start of warm-up"),
    "decay_epochs": (0, int, None, "epochs of the decay; 0: epoch_size - warmup_epochs"),
    "decay_rate": (0.1, float, None, "step/exponential decay rate"),
    "multi_step_decay_milestones": ([], lambda v: [int(x) for x in _floats(v)], None, "epochs of the steps"),
    "lr_epoch_stair": (False, _bool, None, "change the learning rate once per epoch"),
    "epoch_size": (100, int, None, "training epochs"),
    "loss": ("CE", str, ("CE", "BCE"), "loss function"),
    "label_smoothing": (0.0, float, None, "label smoothing"),
    # mixed precision
    "amp_level": ("O0", str, ("O0", "O1", "O2", "O3"), "automatic mixed precision level"),
    "loss_scale_type": ("fixed", str, ("fixed", "dynamic"), "loss scaling"),
    "loss_scale": (1.0, float, None, "(initial) loss scale"),
    "drop_overflow_update": (False, _bool, None, "skip updates whose gradients overflow"),
    # training loop
    "val_while_train": (False, _bool, None, "validate after epochs"),
    "val_interval": (1, int, None, "validate every N epochs"),
    "log_interval": (100, int, None, "progress line every N steps"),
    "ckpt_save_dir": ("./ckpt", str, None, "folder for checkpoints, logs and the merged config"),
    "ckpt_save_interval": (1, int, None, "save a checkpoint every N epochs"),
    "keep_checkpoint_max": (10, int, None, "epoch checkpoints kept (the best is kept apart)"),
}

#: the options that identify a trained model; stored with every checkpoint
IDENTITY = ("model", "block_type", "num_classes", "gamma_init")


#: names other trainers use for our options, for "did you mean" hints
ALIASES = {
    "learning_rate": "lr", "base_lr": "lr", "epochs": "epoch_size", "num_epochs": "epoch_size",
    "arch": "model", "architecture": "model", "data_path": "data_dir", "data_root": "data_dir",
    "wd": "weight_decay", "optimizer": "opt", "lr_scheduler": "scheduler", "warmup": "warmup_epochs",
    "smoothing": "label_smoothing", "workers": "num_parallel_workers", "output_dir": "ckpt_save_dir",
    "pretrained": "ckpt_path", "checkpoint": "ckpt_path", "img_size": "image_resize", "amp": "amp_level",
}


def suggest(name, choices):
    """The option a mistyped ``name`` most likely meant, or None."""
    if name in ALIASES and ALIASES[name] in choices:
        return ALIASES[name]
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return close[0] if close else None


def defaults():
    return {name: spec[0] for name, spec in OPTIONS.items()}


def check_keys(keys, where):
    for key in keys:
        if key not in OPTIONS:
            close = suggest(key, list(OPTIONS))
            hint = f" (did you mean '{close}'?)" if close else ""
            raise UserError(f"{where}: unknown option '{key}'{hint}")


def coerce(name, value, where):
    default, parse, choices, _ = OPTIONS[name]
    try:
        value = parse(value) if value is not None or default is not None else value
    except (TypeError, ValueError) as err:
        raise UserError(f"{where}: option '{name}': {err}") from None
    if choices is not None and value not in choices:
        raise UserError(f"{where}: option '{name}' must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def read_yaml(path):
    """The mapping stored in YAML file ``path``; UserError naming the file otherwise."""
    import yaml

    if not os.path.isfile(path):
        raise UserError(f"{path}: no such config file")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({first_line(err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config must be a mapping of option: value, got {type(data).__name__}")
    return data


def load_config(path):
    """Validated options from a YAML file (only the keys it sets)."""
    data = read_yaml(path)
    check_keys(data, path)
    return {k: coerce(k, v, path) for k, v in data.items()}


def add_options(parser):
    """Add every option as ``--name VALUE`` (no default: absent means not given)."""
    group = parser.add_argument_group("options (YAML keys; the command line overrides the YAML)")
    for name, (_, _, choices, help_text) in OPTIONS.items():
        group.add_argument(f"--{name}", default=argparse.SUPPRESS, metavar="V", help=help_text)


def parse(argv, description, extra=None, base=None):
    """Merge defaults <- ``base`` <- ``--config`` YAML <- command line.

    ``extra(parser)`` may add script-only arguments; they come back as a second
    namespace.  Returns ``(cfg, args)`` with ``cfg`` a dict of every option.
    """
    parser = ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", default=None, help="YAML file of options")
    if extra:
        extra(parser)
    add_options(parser)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        flag = next((u for u in unknown if u.startswith("-")), unknown[0])
        name = flag.lstrip("-").split("=")[0]
        close = suggest(name, list(OPTIONS) + ["config"])
        hint = f" (did you mean '--{close}'?)" if close else ""
        raise UserError(f"command line: unknown option '{flag}'{hint}")
    cfg = defaults()
    cfg.update(base or {})
    if args.config:
        cfg.update(load_config(args.config))
    for name in OPTIONS:
        if name in vars(args):
            cfg[name] = coerce(name, getattr(args, name), "command line")
    return cfg, args


def dump(cfg, path):
    """Write the merged config as YAML, atomically."""
    import yaml

    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(dict(cfg), f, sort_keys=False)
    os.replace(tmp, path)
