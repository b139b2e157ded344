"""The option table: every option with its default, how a value is read, its allowed values and help.

Every option of MindCV's ``config.py`` is here under MindCV's name, in MindCV's
groups, plus ours; :mod:`acnet_ms.config.loader` merges YAML files and the command
line over it.
"""
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

from ..cli import first_line, parse_bool


def _none(value):
    return value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "~", ""))


_bool = parse_bool  # the package's one reading of yes/no values (acnet_ms.cli)


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
    flat_of: Optional[Tuple] = None   # an older flat key: (its kind, the block option it sets)


def _flat_key_options():
    """An option per older flat key of the package's kinds (acb's ``acb_branches`` sets its block option
    ``branches``), read from the kind: its ``flat`` table and the option's help, parser and values."""
    from ..kinds import table  # the package's kinds register on import; other packages' are not loaded here

    out = []
    for kind in table.registered_kinds():
        for key, name in kind.flat.items():
            option = kind.options[name]
            named = option.choices and all(isinstance(c, str) for c in option.choices)  # values the docs list
            out.append(Option(key, None, _opt(option.parse or str), OURS,
                              f"older key of {kind.name}'s block option {name}: {option.help}; default "
                              f"{option.default}", (None, *option.choices) if named else None, True,
                              (kind.name, name)))
    return out


SYSTEM, DATA, AUG, MODEL, OPTIM, SCHED, LOSS, AMP, OURS, LEGACY = (
    "System", "Dataset", "Augmentation", "Model", "Optimizer", "Scheduler", "Loss", "Auto mixed precision",
    "acnet_ms", "Keys of older MindCV recipes")

_IMAGENET_MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
_IMAGENET_STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]
SCHEDULERS = ("constant", "cosine_decay", "warmup_cosine_decay", "exponential_decay", "polynomial_decay",
              "step_decay", "multi_step_decay", "one_cycle", "cyclic")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "lion", "rmsprop", "adagrad", "lamb", "nadam", "adan")

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
    Option("ckpt_partial", False, _bool, MODEL, "with ckpt_path: the classifier may differ from the checkpoint's "
           "(another num_classes) and starts afresh; every other parameter must still load", None, True),
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
    *_flat_key_options(),
    Option("maxpool_pad", None, _str_opt, OURS, "the ResNets' stem max-pool padding: same (MindCV's, bottom and "
           "right) or symmetric (PyTorch's, every side: an imported .pth's own function); None: the model's own",
           (None, "same", "symmetric"), True),
    Option("jit_level", "O2", str, OURS, "graph compile level (O2: Ascend whole-graph sinking)", ("O0", "O1", "O2"), True),
    Option("resume", None, _str_opt, OURS, "training checkpoint to resume from (weights, optimizer, epoch, step)",
           None, True),
    Option("repopt_scales", None, _str_opt, OURS, "RepOpt: a hyper-search checkpoint (block_type rep, block_options "
           "{csla: true}); the run trains the plain model with the gradient multipliers of its gains (docs/repopt.md)",
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
FLAT_BLOCK_KEYS = tuple(o.name for o in _TABLE if o.flat_of)

#: names other trainers use for our options, for "did you mean" hints
ALIASES = {
    "learning_rate": "lr", "base_lr": "lr", "epochs": "epoch_size", "num_epochs": "epoch_size",
    "arch": "model", "architecture": "model", "data_path": "data_dir", "data_root": "data_dir",
    "wd": "weight_decay", "optimizer": "opt", "lr_scheduler": "scheduler", "warmup": "warmup_epochs",
    "smoothing": "label_smoothing", "workers": "num_parallel_workers", "output_dir": "ckpt_save_dir",
    "checkpoint": "ckpt_path", "img_size": "image_resize", "amp": "amp_level", "nesterov": "use_nesterov",
    "sink_mode": "dataset_sink_mode",
}
