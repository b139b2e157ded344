"""convert.py: ACB checkpoints become checkpoints of the plain model (ours and MindCV's)."""
import hashlib
import os

import numpy as np
import pytest
from helpers import (assert_clean_exit, assert_close, assert_one_line_error, images, load_strict, randomize_bn,
                     run_main, run_script, stderr_of, training_checkpoint)

import mindspore as ms
from mindspore import Tensor

from acnet_ms import create_model, switch_to_deploy
from acnet_ms.io.checkpoint import META_KEY, read_checkpoint, write_checkpoint

TOL = 1e-4  # float32 through a whole network, relative to the largest logit


@pytest.fixture(scope="module")
def sres18_ckpt(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("sres18") / "acb.ckpt")
    net = training_checkpoint(path, "sres18", 10, seed=5)
    x = images(0)
    return path, net, x, net(x).asnumpy()


@pytest.mark.slow
def test_sres18_folds_into_our_base_model_and_mindcvs(sres18_ckpt, tmp_path):
    import mindcv

    src, acb_net, x, acb_logits = sres18_ckpt
    out = str(tmp_path / "deploy.ckpt")
    res = run_script("convert.py", "--ckpt_path", src, "--output", out)
    assert res.returncode == 0, res.stderr
    assert "sres18: folded 16 ACBs" in res.stdout  # 8 basic blocks x two 3x3 convs; 7x7 stem stays
    assert stderr_of(res).strip() == "", res.stderr  # no noise, not even at exit

    base = load_strict(create_model("sres18", num_classes=10), out)
    base_logits = base(x).asnumpy()
    assert_close(base_logits, acb_logits, TOL, "base vs ACB")

    theirs = load_strict(mindcv.create_model("resnet18", num_classes=10), out)
    assert_close(theirs(x).asnumpy(), base_logits, 1e-6, "MindCV vs base")

    # the file records what it is, and nothing else rides along
    arrays, meta = read_checkpoint(out)
    assert meta["model"] == "sres18" and meta["block_type"] == "base" and meta["num_classes"] == 10
    raw = ms.load_checkpoint(out)
    assert set(raw) - set(arrays) == {META_KEY}
    assert not any(k.startswith("moments.") or k in ("learning_rate", "global_step") for k in arrays)

    # the in-memory switch computes the same function as the converted file
    switch_to_deploy(acb_net)
    assert_close(acb_net(x).asnumpy(), base_logits, TOL, "switch_to_deploy vs converted")


@pytest.mark.slow
def test_src56_folds_into_the_base_model(tmp_path):
    src, out = str(tmp_path / "acb.ckpt"), str(tmp_path / "plain.ckpt")
    acb = training_checkpoint(src, "src56", 10, seed=11, meta=False, gamma_init=1 / 3)
    x = images(1, 32)
    res = run_script("convert.py", "--ckpt_path", src, "--output", out, "--model", "src56")
    assert res.returncode == 0, res.stderr
    assert "folded 55 ACBs" in res.stdout  # 3x3 stem + 27 basic blocks x two 3x3 convs
    base = load_strict(create_model("src56"), out)
    assert_close(base(x).asnumpy(), acb(x).asnumpy(), TOL, "src56 base vs ACB")


@pytest.mark.slow
def test_edgenext_whose_init_scales_its_head_converts_into_mindcvs(tmp_path):
    """EdgeNeXt's __init__ multiplies its head's weights: the converter still builds the model to check against."""
    import mindcv

    src, out = str(tmp_path / "acb.ckpt"), str(tmp_path / "plain.ckpt")
    acb = training_checkpoint(src, "edgenext_xx_small", 10, seed=3, as_trained=True)
    res = run_script("convert.py", "--ckpt_path", src, "--output", out)
    assert res.returncode == 0, res.stderr[-2000:]
    assert_clean_exit(res)
    assert "edgenext_xx_small: folded 9 ACBs" in res.stdout
    x = images(2)
    expected = acb(x).asnumpy()
    assert np.abs(expected).max() > 0.1
    theirs = load_strict(mindcv.create_model("edgenext_xx_small", num_classes=10), out)
    assert_close(theirs(x).asnumpy(), expected, TOL, "MindCV's edgenext_xx_small vs ACB")


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def bad_case(kind, folder, good):
    """Arguments for convert.py and the fragments its error must name."""
    out = str(folder / "out.ckpt")
    if kind == "missing":
        return ["--ckpt_path", str(folder / "nope.ckpt"), "--output", out], ["nope.ckpt", "no such file"]
    if kind == "text":
        (folder / "notes.ckpt").write_text("not a checkpoint\n")
        return ["--ckpt_path", str(folder / "notes.ckpt"), "--output", out], ["notes.ckpt", "not a readable"]
    if kind == "truncated":
        data = open(good, "rb").read()
        (folder / "cut.ckpt").write_bytes(data[: len(data) // 3])
        return ["--ckpt_path", str(folder / "cut.ckpt"), "--output", out], ["cut.ckpt", "not a readable"]
    if kind == "other_arch":
        return (["--ckpt_path", good, "--output", out, "--model", "sres34"],
                ["not a checkpoint of sres34", "ACB 'layer1.2.conv1'", "missing"])
    if kind == "other_shape":
        return (["--ckpt_path", good, "--output", out, "--model", "src56"],
                ["not a checkpoint of src56", "ACB 'conv1'", "missing"])
    if kind == "plain":
        net = create_model("sres18", num_classes=10)
        write_checkpoint(str(folder / "plain.ckpt"), {p.name: p.asnumpy() for p in net.get_parameters()},
                         {"model": "sres18"})
        return ["--ckpt_path", str(folder / "plain.ckpt"), "--output", out], ["already plain"]
    if kind == "same_output":
        return ["--ckpt_path", good, "--output", good], ["--output is the input"]
    if kind == "no_folder":
        return (["--ckpt_path", good, "--output", str(folder / "absent" / "x.ckpt")],
                ["absent", "does not exist"])
    if kind == "unwritable":
        return ["--ckpt_path", good, "--output", "/proc/acnet_ms_out.ckpt"], ["cannot write", "/proc"]
    if kind == "unknown_model":
        return ["--ckpt_path", good, "--output", out, "--model", "resnet19"], ["unknown model", "resnet18"]
    if kind == "no_identity":
        return ["--ckpt_path", str(folder / "anon.ckpt"), "--output", out], ["--model"]
    if kind == "no_ckpt_arg":
        return ["--output", out], ["convert.py", "required", "--ckpt_path"]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing", "text", "truncated", "other_arch", "other_shape", "plain",
                                  "same_output", "no_folder", "unwritable", "unknown_model", "no_identity",
                                  "no_ckpt_arg"])
def test_bad_input_is_one_line_and_writes_nothing(kind, sres18_ckpt, tmp_path):
    folder, good = tmp_path, sres18_ckpt[0]
    if kind == "no_identity":
        training_checkpoint(str(folder / "anon.ckpt"), "src56", 10, seed=1, meta=False)
    args, fragments = bad_case(kind, folder, good)
    before, listing = digest(good), set(os.listdir(folder))
    res = (run_script if kind == "truncated" else run_main)("convert.py", *args)  # one through a real process
    assert_one_line_error(res, *fragments)
    assert digest(good) == before
    assert set(os.listdir(folder)) == listing  # no output, no temporary file left behind
    assert set(os.listdir(os.path.dirname(good))) == {"acb.ckpt"}
    assert not os.path.exists("/proc/acnet_ms_out.ckpt")


def test_an_existing_output_is_kept_unless_overwrite(sres18_ckpt, tmp_path):
    good, out = sres18_ckpt[0], tmp_path / "deploy.ckpt"
    out.write_bytes(b"an earlier conversion\n")
    os.chmod(out, 0o400)  # as MindSpore leaves the checkpoints it writes
    res = run_main("convert.py", "--ckpt_path", good, "--output", out)
    assert_one_line_error(res, f"{out}: --output already exists", "pass --overwrite to replace it")
    assert out.read_bytes() == b"an earlier conversion\n"
    assert os.listdir(tmp_path) == ["deploy.ckpt"]

    res = run_main("convert.py", "--ckpt_path", good, "--output", out, "--overwrite")
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"wrote {out}" in res.stdout
    assert os.listdir(tmp_path) == ["deploy.ckpt"]  # replaced in place, no temporary file left
    assert read_checkpoint(str(out))[1]["model"] == "sres18"
    load_strict(create_model("sres18", num_classes=10), str(out))


def _saved_without_record(net, path):
    """What ``mindspore.save_checkpoint(net)`` in a loop of one's own writes: parameters, no metadata."""
    ms.save_checkpoint(net, path)


def _logits(net, x):
    net.set_train(False)
    return net(Tensor(x)).asnumpy()


@pytest.mark.parametrize("options", [dict(branches="h"), dict(branch_bn=False), dict(position="corner")],
                         ids=["h", "nobn", "corner"])
def test_a_checkpoint_that_records_nothing_converts_given_its_options(options, tmp_path):
    """What the entries show (branches, branch BNs) is read from them; the position is taken from the
    options given, and without them the assumed default is said in one line."""
    from acnet_ms.convert.pipeline import convert_checkpoint

    ms.set_seed(5)
    acb = randomize_bn(create_model("src20", num_classes=10, block_type="acb", block_options=options), seed=6)
    src = str(tmp_path / "own_loop.ckpt")
    _saved_without_record(acb, src)
    x = np.random.default_rng(2).normal(size=(2, 3, 32, 32)).astype(np.float32)
    expected = _logits(acb, x)
    lines = []
    given = {"position": options["position"]} if "position" in options else None
    dst = str(tmp_path / "plain.ckpt")
    summary = convert_checkpoint(src, dst, model="src20", block_options=given, log=lines.append)
    assert summary["blocks"] == 19
    assumed = [line for line in lines if "assumed the defaults" in line]
    assert assumed == ([] if given else [f"{src}: the checkpoint records no block options; assumed the defaults "
                                         f"position='center' (pass --block_options to say otherwise)"])
    base = create_model("src20", num_classes=10)
    arrays, meta = read_checkpoint(dst)
    assert ms.load_param_into_net(base, {k: ms.Parameter(Tensor(v), name=k) for k, v in arrays.items()},
                                  strict_load=True) == ([], [])
    assert meta["num_classes"] == 10 and meta["block_type"] == "base"
    assert_close(_logits(base, x), expected, TOL, f"converted {options}")
    if given:  # the same checkpoint without its position folds to another function, and says what it assumed
        wrong = str(tmp_path / "assumed.ckpt")
        convert_checkpoint(src, wrong, model="src20", log=lines.append)
        arrays, _ = read_checkpoint(wrong)
        ms.load_param_into_net(base, {k: ms.Parameter(Tensor(v), name=k) for k, v in arrays.items()})
        assert np.abs(_logits(base, x) - expected).max() > 10 * TOL * max(1.0, np.abs(expected).max())


def test_a_conv_classifier_tells_the_class_count_of_a_checkpoint_that_records_nothing(tmp_path):
    """squeezenet1_0's classifier is a 1 x 1 conv: the class count comes from the model's own classifier
    entries (found by building it at two class counts), for convert.py and validate.py alike."""
    import mindcv

    from acnet_ms.convert.pipeline import convert_checkpoint
    from acnet_ms.models import num_classes_of

    ms.set_seed(7)
    acb = randomize_bn(create_model("squeezenet1_0", num_classes=10, block_type="acb"), seed=8)
    src = str(tmp_path / "sq.ckpt")
    _saved_without_record(acb, src)
    arrays, _ = read_checkpoint(src)
    assert num_classes_of("squeezenet1_0", arrays) == 10
    assert num_classes_of("resnet18", {"classifier.weight": np.zeros((12, 512))}) == 12
    assert num_classes_of("resnet18", {"conv1.weight": np.zeros((64, 3, 7, 7))}) is None
    dst = str(tmp_path / "plain.ckpt")
    convert_checkpoint(src, dst, model="squeezenet1_0", log=lambda *_: None)
    stock = mindcv.create_model("squeezenet1_0", num_classes=10)
    folded, meta = read_checkpoint(dst)
    assert ms.load_param_into_net(stock, {k: ms.Parameter(Tensor(v), name=k) for k, v in folded.items()},
                                  strict_load=True) == ([], [])
    x = np.random.default_rng(3).normal(size=(2, 3, 64, 64)).astype(np.float32)
    assert_close(_logits(stock, x), _logits(acb, x), TOL, "squeezenet1_0")
    from acnet_ms.cli import UserError

    with pytest.raises(UserError, match="--num_classes 5, but the checkpoint records 10 classes"):
        convert_checkpoint(dst, str(tmp_path / "x.ckpt"), fold_bn=True, num_classes=5, log=lambda *_: None)


def test_options_given_that_contradict_the_entries_or_the_record_are_one_line(tmp_path):
    from acnet_ms.cli import UserError
    from acnet_ms.convert.pipeline import convert_checkpoint

    acb = create_model("src20", num_classes=10, block_type="acb", block_options=dict(branches="h"))
    src = str(tmp_path / "h.ckpt")
    _saved_without_record(acb, src)
    with pytest.raises(UserError, match="block option 'branches' is 'hv' in the options given, but the "
                                        "checkpoint's entries show 'h'"):
        convert_checkpoint(src, str(tmp_path / "a.ckpt"), model="src20", block_options={"branches": "hv"},
                           log=lambda *_: None)
    with pytest.raises(UserError, match="has no option 'branchs'"):
        convert_checkpoint(src, str(tmp_path / "a.ckpt"), model="src20", block_options={"branchs": "h"},
                           log=lambda *_: None)
    recorded = str(tmp_path / "recorded.ckpt")
    training_checkpoint(recorded, "src20", 10, seed=1)
    with pytest.raises(UserError, match="block option 'position' is 'corner' in the options given, but the "
                                        "checkpoint records 'center'"):
        convert_checkpoint(recorded, str(tmp_path / "b.ckpt"), block_options={"position": "corner"},
                           log=lambda *_: None)
    assert not os.path.exists(tmp_path / "a.ckpt") and not os.path.exists(tmp_path / "b.ckpt")
