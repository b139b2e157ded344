"""Options: every recipe loads, YAML sets defaults, the command line overrides, unknown keys are errors."""
import glob
import os

import pytest
from helpers import ROOT

from acnet_ms import list_models
from acnet_ms.cli import UserError
from acnet_ms.config.loader import load_config, parse

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_loads_and_names_a_model(path):
    cfg = load_config(path)
    assert cfg["model"] in list_models()
    assert cfg["block_type"] in ("base", "acb")
    name = os.path.basename(path)
    if name.endswith("_acb.yaml") or name.endswith("_base.yaml"):
        assert name.startswith(cfg["model"] + "_") and name.endswith(f"_{cfg['block_type']}.yaml")


@pytest.mark.parametrize("depth", [18, 34, 50])
@pytest.mark.parametrize("block", ["acb", "base"])
def test_imagenet_recipe_is_the_original(depth, block):
    cfg, _ = parse(["--config", os.path.join(ROOT, "configs", f"sres{depth}_{block}.yaml")], "")
    assert (cfg["batch_size"], cfg["distribute"], cfg["opt"], cfg["momentum"], cfg["lr"]) == (32, True, "momentum",
                                                                                              0.9, 0.1)
    assert (cfg["scheduler"], cfg["min_lr"], cfg["epoch_size"], cfg["warmup_epochs"]) == ("cosine_decay", 0.0, 100, 0)
    assert (cfg["weight_decay"], cfg["label_smoothing"], cfg["dataset"]) == (1e-4, 0.0, "imagenet")
    assert cfg["block_options"].get("gamma_init") == (1.0 if block == "acb" else None)


@pytest.mark.parametrize("block", ["acb", "base"])
def test_cifar_recipe(block):
    cfg, _ = parse(["--config", os.path.join(ROOT, "configs", f"src56_{block}.yaml")], "")
    assert (cfg["batch_size"], cfg["lr"], cfg["epoch_size"], cfg["weight_decay"]) == (128, 0.2, 400, 1e-4)
    assert (cfg["scheduler"], cfg["min_lr"], cfg["dataset"], cfg["image_resize"]) == ("cosine_decay", 0.0, "cifar10",
                                                                                      32)
    if block == "acb":
        assert cfg["block_options"]["gamma_init"] == pytest.approx(1 / 3)


def test_command_line_overrides_yaml_which_overrides_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.5\nbatch_size: 7\ndistribute: True\n")
    cfg, _ = parse(["--config", str(path), "--lr", "0.25", "--distribute", "False"], "")
    assert cfg["lr"] == 0.25 and cfg["batch_size"] == 7 and cfg["distribute"] is False
    assert cfg["epoch_size"] == 90  # MindCV's default


@pytest.mark.parametrize("text,fragment", [
    ("learning_rate: 0.1\n", "unknown option 'learning_rate' (did you mean 'lr'?)"),
    ("block_type: ACB\n", "option 'block_type' must be one of base, acb"),
    ("batch_size: many\n", "option 'batch_size'"),
    ("- a\n- b\n", "a config must be a mapping"),
    ("lr: [\n", "not valid YAML"),
])
def test_bad_config_files_name_the_file_and_key(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        parse(["--config", str(path)], "")
    assert fragment in str(err.value) and str(path) in str(err.value)


def test_unknown_command_line_option_suggests_the_closest():
    with pytest.raises(UserError, match=r"unknown option '--epochs' \(did you mean '--epoch_size'\?\)"):
        parse(["--epochs", "3"], "")


@pytest.mark.parametrize("model", ["skresnet18", "skresnet34", "skresnet50", "skresnext50_32x4d"])
@pytest.mark.parametrize("suffix", ["", "_acb"])
def test_sk_recipe_is_mindcvs(model, suffix):
    cfg, _ = parse(["--config", os.path.join(ROOT, "configs", f"{model}{suffix}.yaml")], "")
    assert cfg["model"] == model and cfg["block_type"] == ("acb" if suffix else "base")
    assert (cfg["batch_size"], cfg["distribute"], cfg["opt"], cfg["momentum"], cfg["lr"]) == (64, True, "momentum",
                                                                                              0.9, 0.1)
    assert (cfg["epoch_size"], cfg["warmup_epochs"], cfg["min_lr"], cfg["weight_decay"]) == (200, 5, 0.0, 4e-5)
    assert (cfg["label_smoothing"], cfg["interpolation"], cfg["amp_level"]) == (0.1, "bicubic", "O2")
    assert (cfg["loss_scale_type"], cfg["loss_scale"]) == ("fixed", 1024)
    assert cfg["scheduler"] in ("cosine_decay", "warmup_cosine_decay")


def test_block_options_are_one_mapping_and_the_flat_keys_still_work(tmp_path):
    """YAML and the command line give the kind's options as one mapping; the older flat keys set the same
    options; defaults fill the rest; a checkpoint records the resolved mapping."""
    path = tmp_path / "c.yaml"
    path.write_text("model: src20\nblock_type: acb\nblock_options: {branches: h, branch_bn: false}\n")
    cfg, _ = parse(["--config", str(path)], "test")
    assert cfg["block_options"] == dict(branches="h", branch_bn=False, position="center", gamma_init=None)
    cfg, _ = parse(["--config", str(path), "--block_options", "{position: corner}"], "test")
    # the command line's mapping replaces the file's, as any option's value does
    assert cfg["block_options"] == dict(branches="hv", branch_bn=True, position="corner", gamma_init=None)
    old = tmp_path / "old.yaml"  # a recipe written before block_options
    old.write_text("model: src20\nblock_type: acb\nacb_branches: v\nacb_position: corner\ngamma_init: 0.5\n")
    cfg, _ = parse(["--config", str(old)], "test")
    assert cfg["block_options"] == dict(branches="v", branch_bn=True, position="corner", gamma_init=0.5)
    assert cfg["acb_branches"] is None  # one place holds the options once resolved
    cfg, _ = parse(["--config", str(old), "--block_type", "base"], "test")
    assert cfg["block_options"] == {}


@pytest.mark.parametrize("args, fragment", [
    (["--block_type", "acb", "--acb_branches", "h", "--block_options", "{branches: v}"],
     "block option 'branches' is 'v' in block_options but 'h' by 'acb_branches'; set it once"),
    (["--block_type", "acb", "--block_options", "{branchs: h}"],
     "block_type acb has no option 'branchs' (did you mean 'branches'?)"),
    (["--block_type", "acb", "--block_options", "{position: middle}"],
     "block option 'position' of acb must be one of center, corner, got 'middle'"),
    (["--block_type", "acb", "--block_options", "[h]"], "option 'block_options': expected a mapping"),
    (["--block_type", "base", "--block_options", "{branches: h}"], "given for block_type base, which has none"),
    (["--block_type", "dbbx"], "option 'block_type' must be one of base, acb"),
])
def test_bad_block_options_are_one_line_naming_the_option(args, fragment):
    with pytest.raises(UserError) as err:
        parse(["--model", "src20", *args], "test")
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_every_bad_key_is_reported_at_once_against_its_true_source(tmp_path):
    """All typos of a YAML file in one line; a bad --block_options key is the command line's, not the file's."""
    path = tmp_path / "typos.yaml"
    path.write_text("model: src20\nlearning_rate: 0.1\nepochs: 3\nbatch_size: 8\n")
    with pytest.raises(UserError) as err:
        parse(["--config", str(path)], "test")
    assert str(err.value) == (f"{path}: unknown options 'learning_rate' (did you mean 'lr'?), 'epochs' (did you "
                              f"mean 'epoch_size'?)")
    good = tmp_path / "good.yaml"
    good.write_text("model: src20\nblock_type: acb\n")
    with pytest.raises(UserError) as err:
        parse(["--config", str(good), "--block_options", "{branchs: h, postion: corner}"], "test")
    assert str(err.value) == ("command line: block_type acb has no options 'branchs' (did you mean 'branches'?), "
                              "'postion' (did you mean 'position'?)")
    bad = tmp_path / "bad_block.yaml"
    bad.write_text("model: src20\nblock_type: acb\nblock_options: {branchs: h}\n")
    with pytest.raises(UserError, match=f"^{bad}: block_type acb has no option 'branchs'"):
        parse(["--config", str(bad), "--lr", "0.2"], "test")


@pytest.mark.parametrize("value, expected", [(1, True), (0, False), ("yes", True), ("Off", False), (True, True),
                                             ("false", False)])
def test_a_yes_no_value_reads_alike_on_the_command_line_in_yaml_and_in_block_options(tmp_path, value, expected):
    """One reading of yes/no: ``--acb_branch_bn 1``, ``branch_bn: 1`` in a YAML file's block_options and
    ``{branch_bn: 1}`` given to a kind all mean True (the kind's parser once refused the 1 the command line took)."""
    from acnet_ms.kinds import check_block

    assert check_block("acb", {"branch_bn": value})[1]["branch_bn"] is expected
    assert check_block("dbb", {"branch_bn": value})[1]["branch_bn"] is expected
    cfg, _ = parse(["--model", "src20", "--block_type", "acb", "--acb_branch_bn", str(value)], "test")
    assert cfg["block_options"]["branch_bn"] is expected
    path = tmp_path / "run.yaml"
    path.write_text(f"model: src20\nblock_type: dbb\nblock_options: {{branch_bn: {str(value).lower()}}}\n")
    cfg, _ = parse(["--config", str(path)], "test")
    assert cfg["block_options"]["branch_bn"] is expected
    with pytest.raises(ValueError, match="expected True or False, got 2"):
        check_block("acb", {"branch_bn": 2})


def test_an_acb_flat_key_given_to_another_kind_is_named_in_one_warning_line(capsys):
    """``--gamma_init`` is an older key of acb's options: another kind ignores it, and says so once."""
    cfg, _ = parse(["--model", "src20", "--block_type", "dbb", "--gamma_init", "0.3"], "command line")
    assert cfg["block_options"]["gamma_init"] is None
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == ("warning: command line: gamma_init (an older key of acb's options) ignored: block_type dbb "
                    "does not read it; give gamma_init in block_options")
    parse(["--model", "src20", "--block_type", "orepa", "--acb_branches", "h"], "command line")
    assert "acb_branches (an older key of acb's options) ignored: block_type orepa" in capsys.readouterr().err
    parse(["--model", "src20", "--block_type", "acb", "--gamma_init", "0.3"], "command line")
    assert capsys.readouterr().err == ""


def test_an_older_key_left_in_a_recipe_is_blamed_on_the_recipe_not_the_command_line(tmp_path, capsys):
    """A recipe's leftover ``gamma_init`` beside ``--block_options`` on the command line: the warning names the
    recipe file, where the key is, and the command line only for the keys given there."""
    path = tmp_path / "run.yaml"
    path.write_text("model: src20\nblock_type: dbb\ngamma_init: 0.3\n")
    cfg, _ = parse(["--config", str(path), "--block_options", "{branch_bn: false}"], "test")
    assert cfg["block_options"]["branch_bn"] is False
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"warning: {path}: gamma_init (an older key of acb's options) ignored"), line
    parse(["--config", str(path), "--acb_branches", "h"], "test")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("warning: command line: acb_branches ") or lines[1].startswith(
        "warning: command line: acb_branches "), lines
    assert any(line.startswith(f"warning: {path}: gamma_init ") for line in lines), lines


def test_the_older_flat_keys_are_the_kinds_own_and_read_values_as_the_kind_does():
    """Each kind's ``flat`` table is the one source of the command line's older keys: every key is an option
    that sets its kind's option, takes that option's values and reads them as the kind does."""
    from acnet_ms.config.options import FLAT_BLOCK_KEYS, OPTIONS
    from acnet_ms.kinds import get_kind, kind_names

    expected = {key: (name, option) for name in kind_names() for key, option in get_kind(name).flat.items()}
    assert expected and sorted(FLAT_BLOCK_KEYS) == sorted(expected)
    for key, (name, option) in expected.items():
        flat, kind_option = OPTIONS[key], get_kind(name).options[option]
        assert flat.flat_of == (name, option) and flat.default is None and flat.ours, key
        assert f"block option {option}" in flat.help, flat.help
        assert flat.parse("none") is None
        values = kind_option.choices or (0.25,)
        for value in values:
            assert flat.parse(str(value)) == kind_option.check(option, value, name), (key, value)
        cfg, _ = parse(["--model", "src20", "--block_type", name, f"--{key}", str(values[-1])], "command line")
        assert cfg["block_options"][option] == kind_option.check(option, values[-1], name), key


@pytest.mark.parametrize("name, options, fragment", [
    ("acb", {"branches": "x"}, "block option 'branches' of acb must be one of hv, h, v, got 'x'"),
    ("dbb", {"branch_bn": "maybe"}, "block option 'branch_bn' of dbb: expected True or False, got 'maybe'"),
    ("dbb", {"gamma_init": True}, "block option 'gamma_init' of dbb: expected a number or None"),
    ("dbb", {"branch_bns": False}, "block_type dbb has no option 'branch_bns' (did you mean 'branch_bn'?)"),
    ("orepa", {"branches": "origin+skip"}, "block option 'branches' of orepa: unknown branch 'skip'"),
    ("orepa", {"branches": "avg"}, "block option 'branches' of orepa: the branches must include origin"),
    ("orepa", {"init": "zero"}, "block option 'init' of orepa must be one of auto, paper, single, got 'zero'"),
    ("rep", {"num_kxk": 0}, "block option 'num_kxk' of rep: expected an integer >= 1, got 0"),
    ("rep", {"num_kxk": 1.5}, "block option 'num_kxk' of rep: expected an integer >= 1, got 1.5"),
    ("rep", {"num_kxk": True}, "block option 'num_kxk' of rep: expected an integer >= 1, got True"),
    ("rep", {"scale": 2}, "block option 'scale' of rep: expected True or False, got 2"),
])
def test_option_messages(name, options, fragment):
    """The words of each kind's option parsers (the one-line shape of every kind's is the contract's,
    tests/test_kind_contract.py)."""
    from acnet_ms.kinds import check_block

    with pytest.raises(ValueError) as err:
        check_block(name, options)
    assert fragment in str(err.value)


def test_options_given_as_text_are_parsed():
    from acnet_ms.kinds import check_block

    assert check_block("rep", {"num_kxk": "4", "pointwise": "true"})[1] == dict(
        num_kxk=4, pointwise=True, scale=True, identity=True, branch_bn=True, quant_aware=False, csla=False,
        gamma_init=None)
