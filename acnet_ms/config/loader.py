"""Options: one table with defaults (:mod:`acnet_ms.config.options`), YAML sets new defaults, the command line overrides.

Every option of MindCV's ``config.py`` is in the table under MindCV's name, with its
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
import sys

from ..cli import ArgumentParser, UserError, first_line
from .options import _TABLE, ALIASES, FLAT_BLOCK_KEYS, GROUPS, IDENTITY, OPTIONS, Option, _bool


def suggest(name, choices):
    """The option a mistyped ``name`` most likely meant, or None."""
    if name in ALIASES and ALIASES[name] in choices:
        return ALIASES[name]
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return close[0] if close else None


def defaults():
    return {name: (list(o.default) if isinstance(o.default, list) else o.default) for name, o in OPTIONS.items()}


def check_keys(keys, where):
    """UserError naming every key no option knows (each with the closest valid name), in one line."""
    named = []
    for key in keys:
        if key not in OPTIONS:
            close = suggest(key, list(OPTIONS))
            named.append(f"'{key}'" + (f" (did you mean '{close}'?)" if close else ""))
    if named:
        raise UserError(f"{where}: unknown option{'s' if len(named) > 1 else ''} {', '.join(named)}")


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


def resolve_block(cfg, where="config", flat_where=None):
    """``block_type`` checked against the registered kinds, and ``block_options`` with the kind's defaults
    filled in (the older flat keys folded in and then cleared: one place holds the options).
    ``flat_where``: where each older flat key came from, where that is not ``where``."""
    from .. import kinds

    try:
        if cfg["block_type"] not in kinds.block_types():
            raise UserError(f"{where}: option 'block_type' must be one of {', '.join(kinds.block_types())}, "
                            f"got {cfg['block_type']!r}")
        block_type, options = kinds.check_block(cfg["block_type"], cfg.get("block_options"), cfg)
    except ValueError as err:
        raise UserError(f"{where}: {err}") from None
    kind = kinds.get_kind(block_type) if block_type != kinds.BASE else None
    dropped = [k for k in FLAT_BLOCK_KEYS if kind and cfg.get(k) is not None and k not in kind.flat]
    sources = {}  # one line per place the ignored keys came from (a recipe's leftover is not the command line's)
    for key in dropped:
        sources.setdefault((flat_where or {}).get(key, where), []).append(key)
    for source, keys in sources.items():
        _warn_ignored(source, keys, kind, block_type)
    cfg["block_type"], cfg["block_options"] = block_type, options
    for key in FLAT_BLOCK_KEYS:
        cfg[key] = None
    return cfg


def _warn_ignored(where, keys, kind, block_type):
    """One warning line: the older flat ``keys`` (from ``where``) that ``block_type``'s kind does not read."""
    takes = [k for k in keys if k in kind.options]
    owners = " and ".join(sorted({OPTIONS[k].flat_of[0] for k in keys}))  # the kinds whose keys they are
    what = f"an older key of {owners}'s options" if len(keys) == 1 else f"older keys of {owners}'s options"
    print(f"warning: {where}: {', '.join(keys)} ({what}) ignored: block_type {block_type} does not read "
          f"it" + (f"; give {', '.join(takes)} in block_options" if takes else ""), file=sys.stderr)


def resolve(cfg, where="config", block_where=None, flat_where=None):
    """Translate the keys of older MindCV recipes and check what no single option can check alone
    (``block_where``: where the block options came from, if not ``where``; ``flat_where``: where each
    older flat key came from)."""
    resolve_block(cfg, block_where or where, flat_where)
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
        from .. import kinds

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
    given = set(vars(args))
    block_where = "command line" if given & {"block_options", *FLAT_BLOCK_KEYS} else None
    recipe = args.config or "command line"
    flat_where = {key: "command line" if key in given else recipe for key in FLAT_BLOCK_KEYS}
    return resolve(cfg, recipe, block_where, flat_where), args


def dump(cfg, path):
    """Write the merged config as YAML, atomically."""
    import yaml

    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(dict(cfg), f, sort_keys=False)
    os.replace(tmp, path)
