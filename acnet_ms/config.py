"""Options: one table with defaults, YAML sets new defaults, the command line overrides.

Every option of MindCV's ``config.py`` is here under MindCV's name, with its
meaning and default, in MindCV's groups, so MindCV's recipe files run as they
are; ``block_type``, ``block_options``, ``jit_level``, ``resume``, ``dist_bn``,
``train_list`` and ``val_list`` are ours, and the older flat keys of the ACB
kind's options (``gamma_init``, ``acb_branches``, ``acb_branch_bn``,
``acb_position``) still work.  Keys of older MindCV recipes
(``filter_bias_and_bn``, ``dynamic_loss_scale``, the ModelArts keys) are read
and translated.  A key that no option knows is an error that suggests the
closest valid name.  ``docs/options.md`` lists every option.
"""
import argparse
import difflib
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

from .cli import ArgumentParser, UserError, first_line


def _none(value):
    return value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "~", ""))


def _bool(value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected True or False, got {value!r}")


def _items(value):
    if isinstance(value, str):
        return [v.strip() for v in value.strip().strip("[]()").split(",") if v.strip()]
    if isinstance(value, (int, float)):
        return [value]
    return list(value)


def _floats(value):
    return [float(v) for v in _items(value)]


def _ints(value):
    out = []
    for v in _items(value):
        f = float(v)
        if f != int(f):
            raise ValueError(f"expected whole numbers, got {v!r}")
        out.append(int(f))
    return out


def _opt(parse):
    def parse_optional(value):
        return None if _none(value) else parse(value)
    return parse_optional


def _int(value):
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number, got {value!r}")
    f = float(value)
    if f != int(f):
        raise ValueError(f"expected a whole number, got {value!r}")
    return int(f)


def _float(value):
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)  # YAML reads 1e-5 (no dot) as a string: float() takes it


def _float_or_floats(value):
    """One number or a list of numbers (``color_jitter: 0.4`` or ``[0.4, 0.4, 0.4]``)."""
    items = _floats(value)
    return items[0] if len(items) == 1 and not isinstance(value, (list, tuple)) else items


def _erase_value(value):
    """``re_value``: a number, one per channel, or ``random`` (as ``mindspore.dataset.vision.RandomErasing``)."""
    if isinstance(value, str) and value.strip().lower() == "random":
        return "random"
    return _float_or_floats(value)


def _text(value):
    return "" if _none(value) else str(value)


_str_opt = _opt(str)


def _mapping(value):
    """A mapping given as YAML: ``{branches: h, branch_bn: false}`` (command line) or a YAML mapping."""
    if isinstance(value, str):
        import yaml

        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ValueError(f"not a YAML mapping ({first_line(err)})") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping such as {{branches: h}}, got {value!r}")
    return dict(value)


@dataclass(frozen=True)
class Option:
    """One option: its default, how a YAML/command-line value is read, allowed values, group, help."""
    name: str
    default: Any
    parse: Callable
    group: str
    help: str
    choices: Optional[Tuple] = None
    ours: bool = False


SYSTEM, DATA, AUG, MODEL, OPTIM, SCHED, LOSS, AMP, OURS, LEGACY = (
    "System", "Dataset", "Augmentation", "Model", "Optimizer", "Scheduler", "Loss", "Auto mixed precision",
    "acnet_ms", "Keys of older MindCV recipes")

_IMAGENET_MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
_IMAGENET_STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]
SCHEDULERS = ("constant", "cosine_decay", "warmup_cosine_decay", "exponential_decay", "polynomial_decay",
              "step_decay", "multi_step_decay", "one_cycle", "cyclic")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "lion", "rmsprop", "adagrad", "lamb", "nadam", "adan")

_TABLE = [
    # System (MindCV)
    Option("mode", 0, _int, SYSTEM, "0: graph mode, 1: PyNative", (0, 1)),
    Option("distribute", False, _bool, SYSTEM, "data-parallel training under msrun"),
    Option("val_while_train", False, _bool, SYSTEM, "validate during training"),
    Option("val_interval", 1, _int, SYSTEM, "validate every N epochs (and after the last)"),
    Option("log_interval", 100, _int, SYSTEM, "progress line every N steps"),
    Option("seed", 42, _int, SYSTEM, "random seed (weights, data order)"),
    Option("device_target", None, _str_opt, SYSTEM,
           "Ascend, GPU or CPU; default: what this MindSpore build runs on (MindCV: Ascend)",
           (None, "Ascend", "GPU", "CPU")),
    # Dataset (MindCV)
    Option("dataset", "imagenet", str, DATA,
           "imagenet (or ''): an ImageFolder tree data_dir/<split>/<class>/<image>; cifar10: binary CIFAR-10",
           ("imagenet", "", "cifar10")),
    Option("data_dir", "./", _text, DATA, "dataset root"),
    Option("train_split", "train", str, DATA, "sub-folder of data_dir with the training images"),
    Option("val_split", "val", str, DATA, "sub-folder of data_dir with the validation images"),
    Option("dataset_download", False, _bool, DATA, "download the dataset (needs network; see docs/options.md)"),
    Option("num_parallel_workers", 8, _int, DATA, "data pipeline workers (lowered to the machine's cores)"),
    Option("shuffle", True, _bool, DATA, "shuffle the training data"),
    Option("num_samples", None, _opt(_int), DATA, "train on this many samples (per device); None: all"),
    Option("batch_size", 128, _int, DATA, "per-device batch size"),
    Option("drop_remainder", True, _bool, DATA, "drop the last incomplete training batch"),
    Option("aug_repeats", 0, _int, DATA, "repeated augmentation: each sample this many times an epoch (0/1: off)"),
    Option("eval_shuffle", False, _bool, DATA, "shuffle the validation data"),
    # Augmentation (MindCV)
    Option("image_resize", 224, _int, AUG, "network input size"),
    Option("scale", [0.08, 1.0], _floats, AUG, "random resized crop: area range"),
    Option("ratio", [0.75, 1.333], _floats, AUG, "random resized crop: aspect range"),
    Option("hflip", 0.5, _float, AUG, "horizontal flip probability"),
    Option("vflip", 0.0, _float, AUG, "vertical flip probability"),
    Option("color_jitter", 0.4, _opt(_float_or_floats), AUG, "colour jitter factor (or [brightness, contrast, saturation])"),
    Option("interpolation", "bilinear", str, AUG, "resize interpolation", ("bilinear", "bicubic", "nearest", "area")),
    Option("auto_augment", None, _str_opt, AUG, "AutoAugment policy, e.g. randaug-m7-mstd0.5, autoaug, augmix, trivialaugwide"),
    Option("aug_splits", 0, _int, AUG, "augmentation splits (0: off, 3: clean + two augmented, with auto_augment)", (0, 3)),
    Option("re_prob", 0.0, _float, AUG, "random erasing probability"),
    Option("re_scale", [0.02, 0.33], _floats, AUG, "random erasing: area range"),
    Option("re_ratio", [0.3, 3.3], _floats, AUG, "random erasing: aspect range"),
    Option("re_value", 0, _erase_value, AUG, "random erasing fill: a number, one per channel, or random"),
    Option("re_max_attempts", 10, _int, AUG, "random erasing: attempts before giving up"),
    Option("mean", _IMAGENET_MEAN, _floats, AUG, "per-channel mean (0-255 scale)"),
    Option("std", _IMAGENET_STD, _floats, AUG, "per-channel std (0-255 scale)"),
    Option("crop_pct", 0.875, _float, AUG, "evaluation: centre crop / resize ratio"),
    Option("mixup", 0.0, _float, AUG, "mixup beta-distribution alpha (0: off)"),
    Option("cutmix", 0.0, _float, AUG, "cutmix beta-distribution alpha (0: off)"),
    Option("cutmix_prob", 1.0, _float, AUG, "probability of applying mixup/cutmix to a batch"),
    # Model (MindCV)
    Option("model", "mobilenet_v2_035_224", str, MODEL, "registered model name"),
    Option("num_classes", None, _opt(_int), MODEL, "classifier outputs; None: the data's class count"),
    Option("in_channels", 3, _int, MODEL, "input channels"),
    Option("drop_rate", None, _opt(_float), MODEL, "classifier dropout rate (models that take it)"),
    Option("drop_path_rate", None, _opt(_float), MODEL, "stochastic depth rate (models that take it)"),
    Option("pretrained", False, _bool, MODEL, "MindCV's downloaded weights (needs network; see docs/options.md)"),
    Option("ckpt_path", None, _str_opt, MODEL, "checkpoint to start from (finetuning) or to validate"),
    Option("resume_opt", False, _bool, MODEL, "with ckpt_path: resume its optimizer state, epoch and step too"),
    Option("keep_checkpoint_max", 10, _int, MODEL, "epoch checkpoints kept (the -best one is kept apart)"),
    Option("ckpt_save_dir", "./ckpt", _text, MODEL, "folder for checkpoints, logs and the merged config"),
    Option("ckpt_save_interval", 1, _int, MODEL, "save a checkpoint every N epochs (and after the last)"),
    Option("ckpt_save_policy", "latest_k", _str_opt, MODEL,
           "latest_k: keep the newest; top_k: keep the best by validation top-1; None: keep all",
           ("latest_k", "top_k", None)),
    Option("epoch_size", 90, _int, MODEL, "training epochs"),
    Option("dataset_sink_mode", True, _bool, MODEL, "sink the data to the device (Ascend/GPU; CPU runs the loop)"),
    Option("ema", False, _bool, MODEL, "keep an exponential moving average of the weights; validate and save it"),
    Option("ema_decay", 0.9999, _float, MODEL, "EMA decay"),
    Option("clip_grad", False, _bool, MODEL, "clip gradients by global norm"),
    Option("clip_value", 15.0, _float, MODEL, "global norm for clip_grad"),
    Option("layer_decay", None, _opt(_float), MODEL, "layer-wise learning rate decay (models with layer groups)"),
    Option("gradient_accumulation_steps", 1, _int, MODEL, "accumulate the gradients of N batches per update"),
    # Optimizer (MindCV)
    Option("opt", "adam", str.lower, OPTIM, "optimizer", OPTIMIZERS),
    Option("momentum", 0.9, _float, OPTIM, "momentum"),
    Option("weight_decay", 1e-6, _float, OPTIM, "weight decay"),
    Option("use_nesterov", False, _bool, OPTIM, "Nesterov momentum"),
    Option("weight_decay_filter", "disable", str, OPTIM,
           "disable: decay every parameter; norm_and_bias: not norms and biases; auto: MindSpore's own",
           ("disable", "auto", "norm_and_bias")),
    Option("eps", 1e-10, _float, OPTIM, "denominator term of adaptive optimizers"),
    # Scheduler (MindCV)
    Option("scheduler", "cosine_decay", str, SCHED, "learning rate schedule", SCHEDULERS),
    Option("lr", 0.001, _float, SCHED, "peak learning rate"),
    Option("min_lr", 1e-6, _float, SCHED, "lowest learning rate of the decay"),
    Option("warmup_epochs", 3, _int, SCHED, "linear warm-up epochs"),
    Option("warmup_factor", 0.0, _float, SCHED, "learning rate factor at the start of warm-up"),
    Option("decay_epochs", 100, _int, SCHED, "epochs of the decay (step_decay: epochs per step)"),
    Option("decay_rate", 0.9, _float, SCHED, "step/exponential decay rate"),
    Option("multi_step_decay_milestones", [30, 60, 90], _ints, SCHED, "epochs of multi_step_decay's steps"),
    Option("lr_epoch_stair", False, _bool, SCHED, "change the learning rate once per epoch"),
    Option("num_cycles", 1, _int, SCHED, "cosine/cyclic cycles"),
    Option("cycle_decay", 1.0, _float, SCHED, "peak decay per cosine cycle"),
    # Loss (MindCV)
    Option("loss", "CE", str.upper, LOSS, "CE (cross-entropy) or BCE (binary cross-entropy)", ("CE", "BCE")),
    Option("label_smoothing", 0.0, _float, LOSS, "label smoothing"),
    Option("aux_factor", 0.0, _float, LOSS, "weight of auxiliary logits (models that have them)"),
    Option("reduction", "mean", str, LOSS, "loss reduction", ("mean", "sum")),
    # Auto mixed precision (MindCV)
    Option("amp_level", "O0", str, AMP, "automatic mixed precision level for training", ("O0", "O1", "O2", "O3")),
    Option("val_amp_level", "O0", str, AMP, "automatic mixed precision level for validation", ("O0", "O1", "O2", "O3")),
    Option("amp_cast_list", None, _str_opt, AMP, "cells to cast (O1: to fp16; O2: kept fp32), e.g. [nn.Conv2d]"),
    Option("loss_scale_type", "fixed", str.lower, AMP,
           "fixed, dynamic (grows/halves, skips overflowing steps) or auto (dynamic for O2, else fixed)",
           ("fixed", "dynamic", "auto")),
    Option("loss_scale", 1.0, _float, AMP, "(initial) loss scale"),
    Option("drop_overflow_update", False, _bool, AMP, "skip updates whose gradients overflow"),
    # ours
    Option("block_type", "base", str, OURS, "plain conv + BN, or a re-parameterizable block kind (acb, ...)",
           None, True),
    Option("block_options", None, _opt(_mapping), OURS, "the block kind's options as a mapping, e.g. "
           "{branches: h, branch_bn: false, position: corner, gamma_init: 0.33} for acb (docs/models.md)",
           None, True),
    Option("gamma_init", None, _opt(_float), OURS, "older key of acb's block option gamma_init: initial gamma of "
           "the branch BNs (default 1)", None, True),
    Option("acb_branches", None, _str_opt, OURS, "older key of acb's block option branches: hv (both), h (1 x k "
           "only), v (k x 1 only); default hv", (None, "hv", "h", "v"), True),
    Option("acb_branch_bn", None, _opt(_bool), OURS, "older key of acb's block option branch_bn: a BN per branch "
           "(False: the branch convs are summed and one BN follows the sum; trains as one conv); default True",
           None, True),
    Option("acb_position", None, _str_opt, OURS, "older key of acb's block option position: asymmetric kernels "
           "on the centre row/column or the bottom row/right column (the paper's border variant); default center",
           (None, "center", "corner"), True),
    Option("jit_level", "O2", str, OURS, "graph compile level (O2: Ascend whole-graph sinking)", ("O0", "O1", "O2"), True),
    Option("resume", None, _str_opt, OURS, "training checkpoint to resume from (weights, optimizer, epoch, step)",
           None, True),
    Option("dist_bn", "reduce", str, OURS,
           "BN statistics under msrun before each validation and checkpoint: reduce (average over ranks), "
           "broadcast (rank 0's) or none", ("reduce", "broadcast", "none"), True),
    Option("train_list", None, _str_opt, OURS, "list file 'relative/path label' per line (under data_dir)", None, True),
    Option("val_list", None, _str_opt, OURS, "list file 'relative/path label' per line (under data_dir)", None, True),
    # older MindCV recipes
    Option("filter_bias_and_bn", None, _opt(_bool), LEGACY, "older name: True = weight_decay_filter norm_and_bias"),
    Option("dynamic_loss_scale", None, _opt(_bool), LEGACY, "older name: True = loss_scale_type dynamic"),
    Option("enable_modelarts", False, _bool, LEGACY, "ModelArts cloud storage (not supported here)"),
    Option("data_url", None, _str_opt, LEGACY, "ModelArts only"),
    Option("multi_data_url", None, _str_opt, LEGACY, "ModelArts only"),
    Option("ckpt_url", None, _str_opt, LEGACY, "ModelArts only"),
    Option("train_url", None, _str_opt, LEGACY, "ModelArts only"),
]

OPTIONS = {o.name: o for o in _TABLE}
GROUPS = list(dict.fromkeys(o.group for o in _TABLE))

#: the options that identify a trained model; stored with every checkpoint
IDENTITY = ("model", "block_type", "num_classes", "block_options")

#: the older flat keys of a kind's options, which checkpoints written before ``block_options`` record
FLAT_BLOCK_KEYS = ("gamma_init", "acb_branches", "acb_branch_bn", "acb_position")

#: names other trainers use for our options, for "did you mean" hints
ALIASES = {
    "learning_rate": "lr", "base_lr": "lr", "epochs": "epoch_size", "num_epochs": "epoch_size",
    "arch": "model", "architecture": "model", "data_path": "data_dir", "data_root": "data_dir",
    "wd": "weight_decay", "optimizer": "opt", "lr_scheduler": "scheduler", "warmup": "warmup_epochs",
    "smoothing": "label_smoothing", "workers": "num_parallel_workers", "output_dir": "ckpt_save_dir",
    "checkpoint": "ckpt_path", "img_size": "image_resize", "amp": "amp_level", "nesterov": "use_nesterov",
    "sink_mode": "dataset_sink_mode",
}


def suggest(name, choices):
    """The option a mistyped ``name`` most likely meant, or None."""
    if name in ALIASES and ALIASES[name] in choices:
        return ALIASES[name]
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return close[0] if close else None


def defaults():
    return {name: (list(o.default) if isinstance(o.default, list) else o.default) for name, o in OPTIONS.items()}


def check_keys(keys, where):
    for key in keys:
        if key not in OPTIONS:
            close = suggest(key, list(OPTIONS))
            hint = f" (did you mean '{close}'?)" if close else ""
            raise UserError(f"{where}: unknown option '{key}'{hint}")


def coerce(name, value, where):
    option = OPTIONS[name]
    try:
        value = option.parse(value) if value is not None or option.default is not None else value
    except (TypeError, ValueError) as err:
        raise UserError(f"{where}: option '{name}': {err}") from None
    if option.choices is not None and value not in option.choices:
        shown = ", ".join("None" if c is None else (repr(c) if c == "" else str(c)) for c in option.choices)
        raise UserError(f"{where}: option '{name}' must be one of {shown}, got {value!r}")
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


def _shown(value):
    return "None" if value is None else repr(value) if value == "" else str(value)


def add_options(parser):
    """Add every option as ``--name VALUE`` in MindCV's groups; help shows the default and the choices.

    The parser's own defaults stay unset (absent means "not given"), so that a
    YAML value is only overridden by what the command line really says.
    """
    for group_name in GROUPS:
        group = parser.add_argument_group(f"{group_name} options")
        for o in (o for o in _TABLE if o.group == group_name):
            text = o.help + f" (default: {_shown(o.default)}"
            text += f"; one of {', '.join(_shown(c) for c in o.choices)})" if o.choices else ")"
            extra = dict(nargs="?", const="True") if o.parse is _bool else {}
            group.add_argument(f"--{o.name}", default=argparse.SUPPRESS, metavar="V", help=text.replace("%", "%%"),
                               **extra)


def resolve_block(cfg, where="config"):
    """``block_type`` checked against the registered kinds, and ``block_options`` with the kind's defaults
    filled in (the older flat keys folded in and then cleared: one place holds the options)."""
    from . import kinds

    try:
        block_type, options = kinds.check_block(cfg["block_type"], cfg.get("block_options"), cfg)
    except ValueError as err:
        raise UserError(f"{where}: {err}") from None
    cfg["block_type"], cfg["block_options"] = block_type, options
    for key in FLAT_BLOCK_KEYS:
        cfg[key] = None
    return cfg


def resolve(cfg, where="config"):
    """Translate the keys of older MindCV recipes and check what no single option can check alone."""
    resolve_block(cfg, where)
    if cfg.get("filter_bias_and_bn") is not None and cfg["weight_decay_filter"] == "disable":
        cfg["weight_decay_filter"] = "norm_and_bias" if cfg["filter_bias_and_bn"] else "disable"
    if cfg.get("dynamic_loss_scale") and cfg["loss_scale_type"] == "fixed":
        cfg["loss_scale_type"] = "dynamic"
    if cfg.get("enable_modelarts"):
        raise UserError(f"{where}: option 'enable_modelarts': ModelArts' cloud storage is not supported here; "
                        f"copy the data to a local folder and set data_dir (and ckpt_save_dir)")
    if not cfg["ckpt_save_dir"]:
        cfg["ckpt_save_dir"] = OPTIONS["ckpt_save_dir"].default  # MindCV recipes often say ''
    for key in ("batch_size", "epoch_size", "log_interval", "ckpt_save_interval", "val_interval",
                "gradient_accumulation_steps", "num_parallel_workers", "in_channels", "image_resize"):
        if cfg[key] < 1:
            raise UserError(f"{where}: option '{key}' must be >= 1, got {cfg[key]}")
    for key in ("scale", "ratio", "re_scale", "re_ratio"):
        if len(cfg[key]) != 2 or cfg[key][0] > cfg[key][1]:
            raise UserError(f"{where}: option '{key}' must be two numbers [low, high], got {cfg[key]}")
    for key in ("hflip", "vflip", "re_prob", "cutmix_prob", "label_smoothing"):
        if not 0.0 <= cfg[key] <= 1.0:
            raise UserError(f"{where}: option '{key}' must be in [0, 1], got {cfg[key]}")
    if cfg["num_classes"] is not None and cfg["num_classes"] < 1:
        raise UserError(f"{where}: option 'num_classes' must be >= 1, got {cfg['num_classes']}")
    if cfg["loss_scale"] < 1:
        raise UserError(f"{where}: option 'loss_scale' must be >= 1, got {cfg['loss_scale']}")
    if cfg["aug_repeats"] > 1 and cfg["num_samples"] is not None:
        raise UserError(f"{where}: options 'aug_repeats' and 'num_samples' cannot be set together (as in MindCV)")
    if cfg["aug_splits"] and not cfg["auto_augment"]:
        raise UserError(f"{where}: option 'aug_splits' needs an auto_augment policy")
    if cfg["ckpt_save_policy"] == "top_k" and not cfg["val_while_train"]:
        raise UserError(f"{where}: ckpt_save_policy top_k ranks checkpoints by validation: set val_while_train True")
    for key in ("mean", "std"):
        if len(cfg[key]) != cfg["in_channels"]:
            raise UserError(f"{where}: option '{key}' has {len(cfg[key])} values for {cfg['in_channels']} "
                            f"input channels")
    return cfg


def conversion_options(config_path, given):
    """``(explicit, from_config)``: ``model``, ``num_classes``, ``block_type`` and ``block_options`` for
    ``convert.py`` as the command line gives them (``given``; absent: None), and as its ``--config``
    file sets them (older flat keys folded into ``block_options``; absent keys left out)."""
    explicit = {}
    for key in ("model", "num_classes", "block_type", "block_options"):
        value = given.get(key)
        explicit[key] = coerce(key, value, "command line") if value is not None else None
    if explicit["num_classes"] is not None and explicit["num_classes"] < 1:
        raise UserError(f"command line: --num_classes must be >= 1, got {explicit['num_classes']}")
    if not config_path:
        return explicit, {}
    cfg = load_config(config_path)
    if explicit["model"] is None and not cfg.get("model"):
        raise UserError(f"{config_path}: no 'model' key")
    from_config = {k: cfg[k] for k in ("model", "num_classes", "block_type", "block_options") if cfg.get(k)}
    if cfg.get("block_type") not in (None, "base"):
        from . import kinds

        try:
            from_config["block_options"] = kinds.check_block(cfg["block_type"], cfg.get("block_options"), cfg)[1]
        except ValueError as err:
            raise UserError(f"{config_path}: {err}") from None
    return explicit, from_config


def parse(argv, description, extra=None, base=None):
    """Merge defaults <- ``base`` <- ``--config`` YAML <- command line.

    ``extra(parser)`` may add script-only arguments; they come back as a second
    namespace.  Returns ``(cfg, args)`` with ``cfg`` a dict of every option.
    """
    parser = ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", default=None, help="YAML file of options (MindCV's recipe files work)")
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
    return resolve(cfg, args.config or "command line"), args


def dump(cfg, path):
    """Write the merged config as YAML, atomically."""
    import yaml

    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(dict(cfg), f, sort_keys=False)
    os.replace(tmp, path)
