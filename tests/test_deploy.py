"""The fully folded form (convert.py --fold_bn) and graph export (--export mindir|onnx)."""
import json
import os

import numpy as np
import pytest
from helpers import (ROOT, arrays_of, assert_clean_exit, assert_close, assert_one_line_error, images, load_strict,
                     run_main, run_script, stderr_of, training_checkpoint)

import mindspore as ms
from mindspore import Tensor, nn

from acnet_ms import create_model
from acnet_ms.kinds import identities
from acnet_ms.reparam import state as state_map
from acnet_ms.io.checkpoint import read_checkpoint
from acnet_ms.config.loader import defaults, load_config

TOL = 1e-4  # float32 through a whole network (and through another runtime), relative to the largest logit


def load_deploy(path, name):
    """The deploy model, loaded strictly (every parameter, nothing left over) from a --fold_bn checkpoint."""
    state, meta = read_checkpoint(path)
    assert meta["deploy"] is True and meta["block_type"] == "base" and meta["model"] == name
    net = load_strict(create_model(name, num_classes=meta["num_classes"], deploy=True), state)
    assert not any(isinstance(c, nn.BatchNorm2d) for _, c in net.cells_and_names())
    return net


def convert(*args):
    res = run_script("convert.py", *args)
    assert res.returncode == 0, res.stderr[-3000:]
    assert stderr_of(res).strip() == "", res.stderr[-3000:]
    return res


# ---------------------------------------------------------------- every model, structure only

@pytest.mark.slow
def test_every_model_has_a_deploy_form_and_every_bn_folds_into_it():
    from acnet_ms.models.registry import _REGISTRY

    # ours, and MindCV's through the same path; sres101/152 and skresnet34 repeat sres50's and skresnet18's blocks
    for name in sorted(set(_REGISTRY) - {"sres101", "sres152", "skresnet34"}) + ["sres18", "skresnet18"]:
        base = create_model(name, num_classes=10)
        deploy = create_model(name, num_classes=10, deploy=True)
        cells = dict(deploy.cells_and_names())
        bns = [n for n, c in base.cells_and_names() if isinstance(c, nn.BatchNorm2d)]
        state, pairs = state_map.fold_bns(arrays_of(base), deploy.acnet.fused_pairs)
        # every BN that follows a conv (stem, blocks, shortcuts, SK paths and attention) is folded into it;
        # only pre-activation BNs (which follow no conv) remain, as BNs
        folded = [p[1] for p in pairs]
        left = [n for n, c in cells.items() if isinstance(c, nn.BatchNorm2d)]
        assert sorted(folded + left) == sorted(bns), name
        assert not left or name == "wrnc16", (name, left)
        for conv, bn, _ in pairs:
            assert isinstance(cells[conv], nn.Conv2d) and cells[conv].has_bias, (name, conv)
            assert isinstance(cells[bn], nn.Identity), (name, bn)
        # ... and the folded checkpoint is exactly the deploy model's parameters, in its order
        expected = [(p.name, tuple(p.shape)) for p in deploy.get_parameters()]
        assert sorted((k, v.shape) for k, v in state.items()) == sorted(expected), name
    assert any(bn.endswith(".attn.bn") for _, bn, _ in create_model("skresnet18", deploy=True).acnet.fused_pairs)


def test_deploy_needs_the_base_block_type():
    with pytest.raises(ValueError, match="deploy=True builds the fully folded form.*got 'acb'"):
        create_model("src20", block_type="acb", deploy=True)


# ---------------------------------------------------------------- the numpy fold

def conv1x1(kernel, bias, x):
    """A 1 x 1 conv on (C, N) columns."""
    y = kernel[:, :, 0, 0] @ x
    return y if bias is None else y + bias[:, None]


@pytest.mark.parametrize("with_bias", [False, True])
def test_fold_bns_is_bn_after_conv(with_bias):
    rng = np.random.default_rng(with_bias)
    state = {"m.conv1.weight": rng.normal(size=(4, 3, 1, 1)), "m.bn1.gamma": rng.uniform(0.5, 1.5, 4),
             "m.bn1.beta": rng.normal(size=4), "m.bn1.moving_mean": rng.normal(size=4),
             "m.bn1.moving_variance": rng.uniform(0.5, 2, 4), "head.weight": rng.normal(size=(2, 4))}
    if with_bias:
        state["m.conv1.bias"] = rng.normal(size=4)
    out, pairs = state_map.fold_bns(state, [("m.conv1", "m.bn1")])
    assert pairs == [("m.conv1", "m.bn1")]
    assert list(out) == ["m.conv1.weight", "m.conv1.bias", "head.weight"]
    x = rng.normal(size=(3, 5))
    y = conv1x1(state["m.conv1.weight"], state.get("m.conv1.bias"), x)
    bn = (y - state["m.bn1.moving_mean"][:, None]) / np.sqrt(state["m.bn1.moving_variance"][:, None] + identities.BN_EPS)
    bn = bn * state["m.bn1.gamma"][:, None] + state["m.bn1.beta"][:, None]
    np.testing.assert_allclose(conv1x1(out["m.conv1.weight"], out["m.conv1.bias"], x), bn, rtol=1e-12, atol=1e-12)


def test_a_bn_after_no_conv_stays_and_a_misfit_pair_is_an_error():
    rng = np.random.default_rng(0)
    bn = {f: rng.uniform(0.5, 1.5, 4) for f in identities.BN_FIELDS}
    state = {"a.conv1.weight": rng.normal(size=(4, 3, 3, 3)), **{f"a.bn1.{f}": v for f, v in bn.items()},
             **{f"a.norm.{f}": v for f, v in bn.items()}}
    out, _ = state_map.fold_bns(state, [("a.conv1", "a.bn1")])
    assert sorted(out) == ["a.conv1.bias", "a.conv1.weight"] + [f"a.norm.{f}" for f in sorted(identities.BN_FIELDS)]
    with pytest.raises(ValueError, match=r"'a\.bn2\.gamma' is missing"):
        state_map.fold_bns(state, [("a.conv1", "a.bn2")])
    state["a.conv1.weight"] = rng.normal(size=(5, 3, 3, 3))
    with pytest.raises(ValueError, match=r"BatchNorm 'a\.bn1' \(shape \[4\]\) into conv 'a\.conv1' \(5 output"):
        state_map.fold_bns(state, pairs=[("a.conv1", "a.bn1")])


# ---------------------------------------------------------------- whole networks through convert.py

@pytest.mark.parametrize("name,size,export", [("sres18", 64, "mindir"), ("skresnet18", 64, "onnx")])
@pytest.mark.slow
def test_acb_checkpoint_folds_fully_and_exports(name, size, export, tmp_path):
    src, out = str(tmp_path / "acb.ckpt"), str(tmp_path / "deploy.ckpt")
    acb = training_checkpoint(src, name, seed=5)
    x = images(1, size)
    ref = acb(x).asnumpy()
    assert np.abs(ref).max() > 0.1
    res = convert("--ckpt_path", src, "--output", out, "--fold_bn", "--export", export,
                  "--input_shape", f"1,3,{size},{size}")
    n_bn = sum(isinstance(c, nn.BatchNorm2d) for _, c in create_model(name).cells_and_names())
    acbs = {"sres18": 16, "skresnet18": 24}[name]
    assert f"{name}: folded {acbs} ACBs, then {n_bn} BatchNorms into their convs" in res.stdout
    graph = str(tmp_path / f"deploy.{export}")
    assert f"exported {export.upper()} graph {graph}: input shape [1, 3, {size}, {size}] (float32, NCHW; " \
           f"from --input_shape)" in res.stdout
    assert sorted(os.listdir(tmp_path)) == sorted(["acb.ckpt", "deploy.ckpt", f"deploy.{export}"])

    deploy = load_deploy(out, name)
    logits = deploy(x).asnumpy()
    assert_close(logits, ref, TOL, "fully folded vs ACB")

    one = Tensor(x.asnumpy()[:1])
    if export == "mindir":
        graph_logits = nn.GraphCell(ms.load(graph))(one).asnumpy()
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
        (inp,) = session.get_inputs()
        assert inp.shape == [1, 3, size, size]
        (graph_logits,) = session.run(None, {inp.name: one.asnumpy()})
    assert graph_logits.shape == (1, 10)
    assert_close(graph_logits, deploy(one).asnumpy(), TOL, f"{export} vs MindSpore")


@pytest.fixture(scope="module")
def src20(tmp_path_factory):
    """A src20 ACB checkpoint recording the digits demo recipe (16 px images), its plain and its fully folded
    conversions."""
    folder = tmp_path_factory.mktemp("src20")
    cfg = dict(defaults(), **load_config(os.path.join(ROOT, "configs", "demo_digits.yaml")))
    src, plain, deploy = (str(folder / n) for n in ("acb.ckpt", "plain.ckpt", "deploy.ckpt"))
    acb = training_checkpoint(src, "src20", seed=8, meta=dict(config=cfg))
    res = convert("--ckpt_path", src, "--output", plain, "--export", "onnx")  # plain, BNs kept, exported
    assert "src20: folded 19 ACBs; " in res.stdout
    assert cfg["image_resize"] == 16  # src20's own input size is 32: the export takes the trained size
    assert (f"exported ONNX graph {folder / 'plain.onnx'}: input shape [1, 3, 16, 16] "
            f"(float32, NCHW; the checkpoint's training image_resize)") in res.stdout
    convert("--ckpt_path", src, "--output", deploy, "--fold_bn")
    return acb, plain, deploy


@pytest.mark.slow
def test_src20_acb_and_plain_checkpoints_fold_fully(src20, tmp_path):
    import onnxruntime as ort

    acb, plain, deploy = src20
    x = images(2, 32)
    ref = acb(x).asnumpy()
    assert np.abs(ref).max() > 0.1
    assert_close(load_deploy(deploy, "src20")(x).asnumpy(), ref, TOL, "fully folded vs ACB")
    # the plain model's export, at the size the checkpoint was trained at
    session = ort.InferenceSession(plain[:-len(".ckpt")] + ".onnx", providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.shape == [1, 3, 16, 16]
    small = images(3, 16, batch=1)
    assert_close(session.run(None, {inp.name: small.asnumpy()})[0], acb(small).asnumpy(), TOL, "plain ONNX vs ACB")

    # a plain checkpoint has no ACB, but with --fold_bn it still has BNs to fold
    out = str(tmp_path / "from_plain.ckpt")
    res = convert("--ckpt_path", plain, "--output", out, "--fold_bn")
    assert "src20: folded 0 blocks, then 21 BatchNorms into their convs" in res.stdout
    base = create_model("src20")
    state, _ = read_checkpoint(plain)
    ms.load_param_into_net(base, {k: ms.Parameter(Tensor(v), name=k) for k, v in state.items()}, strict_load=True)
    base.set_train(False)
    base_logits = base(x).asnumpy()
    assert_close(base_logits, ref, TOL, "plain vs ACB")
    assert_close(load_deploy(out, "src20")(x).asnumpy(), base_logits, TOL, "fully folded from plain vs plain")


@pytest.mark.slow
def test_export_without_a_recorded_size_takes_the_models_input_size(tmp_path):
    import onnxruntime as ort

    src, out = str(tmp_path / "acb.ckpt"), str(tmp_path / "plain.ckpt")
    training_checkpoint(src, "src20", seed=4)  # no training config recorded
    res = convert("--ckpt_path", src, "--output", out, "--export", "onnx")
    assert "input shape [1, 3, 32, 32] (float32, NCHW; src20's input size: the checkpoint records no image_resize)" \
        in res.stdout
    graph = str(tmp_path / "plain.onnx")
    assert ort.InferenceSession(graph, providers=["CPUExecutionProvider"]).get_inputs()[0].shape == [1, 3, 32, 32]


@pytest.mark.slow
def test_an_existing_graph_is_kept_unless_overwrite(src20, tmp_path):
    import onnxruntime as ort

    plain, out, graph = src20[1], tmp_path / "deploy.ckpt", tmp_path / "deploy.onnx"
    graph.write_bytes(b"an earlier export\n")
    os.chmod(graph, 0o400)  # as MindSpore leaves the graphs it writes
    args = ["--ckpt_path", plain, "--output", out, "--fold_bn", "--export", "onnx"]
    res = run_main("convert.py", *args)
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {graph}: the exported graph (next to --output) already exists; "
                     f"pass --overwrite to replace it"], res.stderr
    assert graph.read_bytes() == b"an earlier export\n"
    assert os.listdir(tmp_path) == ["deploy.onnx"]  # no checkpoint either

    res = convert(*args, "--overwrite")
    assert sorted(os.listdir(tmp_path)) == ["deploy.ckpt", "deploy.onnx"]
    assert graph.read_bytes() != b"an earlier export\n"
    assert ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).get_inputs()[0].shape == \
        [1, 3, 16, 16]
    res = convert(*args, "--overwrite")  # both exist now, both read-only: replaced again
    assert "wrote" in res.stdout and sorted(os.listdir(tmp_path)) == ["deploy.ckpt", "deploy.onnx"]


@pytest.mark.slow
def test_validate_picks_the_deploy_model_with_the_same_top1(src20, digits, tmp_path):
    _, plain, deploy = src20
    runs = {}
    for kind, path in (("plain", plain), ("deploy", deploy)):
        out = tmp_path / f"{kind}.json"
        res = run_script("validate.py", "--ckpt_path", path, "--data_dir", digits, "--val_list", "val_small.txt",
                         "--num_parallel_workers", 1, "--json", out)
        assert res.returncode == 0, res.stderr[-3000:]
        assert_clean_exit(res)
        runs[kind] = json.loads(out.read_text())
    assert runs["plain"]["samples"] == runs["deploy"]["samples"] == 60
    assert runs["plain"]["correct1"] == runs["deploy"]["correct1"]
    assert runs["deploy"]["loss"] == pytest.approx(runs["plain"]["loss"], rel=1e-4)
    # the deploy checkpoint does not fit the BN model: validate.py did choose the deploy form
    state, _ = read_checkpoint(deploy)
    assert "conv1.bias" in state and "bn1.gamma" not in state


def test_finetuning_refuses_a_fully_folded_checkpoint(src20):
    from acnet_ms.engine.loading import load_pretrained
    from acnet_ms.cli import UserError

    _, plain, deploy = src20
    with pytest.raises(UserError, match="fully folded checkpoint .* no BatchNorm left to train"):
        load_pretrained(create_model("src20"), deploy, log=lambda line: None)
    assert load_pretrained(create_model("src20"), plain, log=lambda line: None)  # the plain one loads


# ---------------------------------------------------------------- bad input

def bad_case(kind, folder, src20):
    _, plain, deploy = src20
    out = str(folder / "out.ckpt")
    if kind == "shape_three":
        return ["--ckpt_path", plain, "--output", out, "--export", "onnx", "--input_shape", "1,3,32"], \
            ["--input_shape must be four positive integers", "'1,3,32'"]
    if kind == "shape_text":
        return ["--ckpt_path", plain, "--output", out, "--export", "onnx", "--input_shape", "1x3x32x32"], \
            ["--input_shape must be four positive integers", "'1x3x32x32'"]
    if kind == "shape_zero":
        return ["--ckpt_path", plain, "--output", out, "--export", "mindir", "--input_shape", "1,3,0,32"], \
            ["--input_shape must be four positive integers"]
    if kind == "shape_channels":
        return ["--ckpt_path", plain, "--output", out, "--fold_bn", "--export", "onnx", "--input_shape",
                "1,4,32,32"], ["src20 takes 3 input channels, not 4"]
    if kind == "shape_no_export":
        return ["--ckpt_path", plain, "--output", out, "--fold_bn", "--input_shape", "1,3,32,32"], \
            ["--input_shape needs --export"]
    if kind == "format":
        return ["--ckpt_path", plain, "--output", out, "--fold_bn", "--export", "tflite"], \
            ["--export must be one of mindir, onnx", "'tflite'"]
    if kind == "already_folded":
        return ["--ckpt_path", deploy, "--output", out, "--fold_bn"], ["already fully folded"]
    if kind == "graph_is_output":
        return ["--ckpt_path", plain, "--output", str(folder / "x.onnx"), "--fold_bn", "--export", "onnx"], \
            ["x.onnx", "would overwrite --output"]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["shape_three", "shape_text", "shape_zero", "shape_channels", "shape_no_export",
                                  "format", "already_folded", "graph_is_output"])
def test_bad_input_is_one_line_and_writes_nothing(kind, src20, tmp_path):
    args, fragments = bad_case(kind, tmp_path, src20)
    inputs = sorted(os.listdir(os.path.dirname(src20[1])))
    assert_one_line_error(run_main("convert.py", *args), *fragments)
    assert os.listdir(tmp_path) == []  # no checkpoint, no graph, no temporary file
    assert sorted(os.listdir(os.path.dirname(src20[1]))) == inputs


@pytest.mark.slow
def test_validate_scores_a_mindir_graph_as_its_checkpoint_and_export_keeps_the_folders_mode(digits, tmp_path):
    """convert.py --export mindir, then validate.py on the .mindir: the checkpoint's metrics line; the output
    folder's mode is what it was (MindSpore's export makes it 0700)."""
    folder = tmp_path / "out"
    folder.mkdir()
    os.chmod(folder, 0o755)
    src, out = str(tmp_path / "acb.ckpt"), str(folder / "plain.ckpt")
    recipe = {"image_resize": 16, "crop_pct": 1.0, "interpolation": "bilinear", "num_parallel_workers": 1}
    training_checkpoint(src, "src20", seed=2, meta={"config": recipe})
    res = run_main("convert.py", "--ckpt_path", src, "--output", out, "--export", "mindir")
    assert res.returncode == 0, res.stderr[-2000:]
    assert os.stat(folder).st_mode & 0o777 == 0o755
    scores = {}
    for path in (out, str(folder / "plain.mindir")):
        res = run_main("validate.py", "--ckpt_path", path, "--data_dir", digits, "--val_list", "val_small.txt")
        assert res.returncode == 0, res.stderr[-2000:]
        scores[path] = dict(kv.split("=") for kv in res.stdout.strip().splitlines()[-1].split())
    ckpt, graph = scores[out], scores[str(folder / "plain.mindir")]
    assert ckpt["samples"] == graph["samples"] == "60"
    assert (ckpt["top1"], ckpt["top5"]) == (graph["top1"], graph["top5"])
    assert abs(float(ckpt["loss"]) - float(graph["loss"])) <= 1e-4 * max(1.0, float(ckpt["loss"])), scores
