"""INT8 deployment: convert.py --int8, validate.py on .onnx graphs, analyze.py quantization."""
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, assert_clean_exit, run_script, small_run, stderr_of

from acnet_ms.io.checkpoint import read_checkpoint, write_checkpoint
from acnet_ms.convert.quantize import int8_roundtrip, range_ratios, weight_sqnr

LINE = re.compile(r"^top1=\d\.\d{4} top5=\d\.\d{4} loss=\d+\.\d{4} samples=\d+$")


@pytest.fixture(scope="module")
def graphs(digits, tmp_path_factory):
    """A src20 ACB model trained 2 epochs on the digits, fully folded, exported and quantized by convert.py."""
    folder = tmp_path_factory.mktemp("int8")
    run = str(folder / "run")
    res = run_script("train.py", "--config", os.path.join(ROOT, "configs", "demo_digits.yaml"), "--data_dir", digits,
                     "--ckpt_save_dir", run, "--epoch_size", 2, "--val_while_train", False, "--keep_checkpoint_max", 1,
                     "--num_parallel_workers", 1, "--log_interval", 1000)
    assert res.returncode == 0, res.stderr[-3000:]
    acb = os.path.join(run, "src20_acb-e002.ckpt")
    deploy = str(folder / "deploy.ckpt")
    res = run_script("convert.py", "--ckpt_path", acb, "--output", deploy, "--fold_bn", "--export", "onnx", "--int8",
                     "--calib_data", os.path.join(digits, "train"), "--calib_samples", 128)
    assert res.returncode == 0 and stderr_of(res).strip() == "", res.stderr[-3000:]
    assert (f"quantized INT8 graph {folder / 'deploy.int8.onnx'}: onnxruntime static quantization (QDQ, "
            f"per-channel INT8 weights), 128 calibration images of {os.path.join(digits, 'train')} (minmax)") \
        in res.stdout
    assert sorted(os.listdir(folder)) == ["deploy.ckpt", "deploy.int8.onnx", "deploy.onnx", "run"]
    return dict(acb=acb, ckpt=deploy, fp32=str(folder / "deploy.onnx"), int8=str(folder / "deploy.int8.onnx"))


@pytest.fixture(scope="module")
def ckpt_metrics(graphs, digits, tmp_path_factory):
    """validate.py's metrics of the fully folded checkpoint."""
    return validate(graphs["ckpt"], digits, tmp_path_factory.mktemp("ckpt") / "ckpt.json")[0]


def validate(path, digits, out, *extra):
    res = run_script("validate.py", "--ckpt_path", path, "--data_dir", digits, "--num_parallel_workers", 1,
                     "--json", out, *extra)
    assert res.returncode == 0, res.stderr[-3000:]
    assert_clean_exit(res)
    assert LINE.match(res.stdout.strip().splitlines()[-1]), res.stdout
    return json.load(open(out)), res.stdout.strip().splitlines()[-1]


# ---------------------------------------------------------------- pure numpy: known answers

E = 0.3 / 127  # an entry 0.3 of a grid step above zero: rounds to 0, error E * max


def hand_kernel(out_channels=4, inputs=3, k=3):
    """Channel c holds ±a_c at one entry and ±a_c E at another, zeros elsewhere; a_c spans 1e-3 .. 1e3."""
    w = np.zeros((out_channels, inputs, k, k))
    for c, a in enumerate(np.logspace(-3, 3, out_channels)):
        sign = 1 if c % 2 else -1
        w[c, 0, 0, 0] = sign * a
        w[c, inputs - 1, k - 1, k - 1] = sign * a * E
    return w


def test_int8_weight_sqnr_and_range_of_hand_built_kernels():
    w = hand_kernel()
    n = w[0].size
    # per channel the only error is the small entry (rounds to 0): SQNR is the same for every a_c
    assert weight_sqnr(w) == pytest.approx(10 * math.log10((1 + E ** 2) / E ** 2), abs=1e-9)
    # per-tensor scaling would zero the small channels: per-channel is what is measured
    per_tensor = np.round(w / (np.abs(w).max() / 127)) * (np.abs(w).max() / 127)
    assert 10 * math.log10(np.sum(w ** 2) / np.sum((w - per_tensor) ** 2)) < weight_sqnr(w) - 1
    # max |w_c| / std(w_c): a_c / (a_c sqrt((1 + E^2) / n - ((1 + E) / n)^2)), whatever a_c and sign
    ratio = 1 / math.sqrt((1 + E ** 2) / n - ((1 + E) / n) ** 2)
    np.testing.assert_allclose(range_ratios(w), [ratio] * 4, rtol=1e-12)
    # values on the grid round-trip exactly; zero tensors have no SQNR, zero channels keep zero
    grid = np.arange(-127, 128, dtype=float).reshape(1, 255) * 0.01
    assert weight_sqnr(grid) == math.inf
    assert weight_sqnr(np.zeros((2, 3))) is None
    z = np.stack([np.zeros(5), np.linspace(-1, 1, 5)])
    np.testing.assert_array_equal(int8_roundtrip(z)[0], 0)
    assert range_ratios(z).shape == (1,)  # the zero channel (std 0) is left out


# ---------------------------------------------------------------- convert.py --int8, validate.py on graphs

@pytest.mark.slow
def test_int8_graph_has_qdq_nodes_and_scores_within_two_points_of_fp32(graphs, ckpt_metrics, digits, tmp_path):
    import mindspore  # noqa: F401  (before onnx: see acnet_ms.convert.quantize.runtime)
    import onnx

    ops = {node.op_type for node in onnx.load(graphs["int8"]).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weights = [n for n in onnx.load(graphs["int8"]).graph.node
               if n.op_type == "DequantizeLinear" and n.input[0].endswith("weight_quantized")]
    assert weights and all(any(a.name == "axis" for a in n.attribute) for n in weights)  # per-channel
    ckpt = ckpt_metrics
    fp32, _ = validate(graphs["fp32"], digits, tmp_path / "fp32.json")
    int8, _ = validate(graphs["int8"], digits, tmp_path / "int8.json")
    assert ckpt["samples"] == fp32["samples"] == int8["samples"] == 359
    assert fp32["correct1"] == ckpt["correct1"] and fp32["top1"] == ckpt["top1"]
    assert fp32["loss"] == pytest.approx(ckpt["loss"], rel=1e-4)
    assert ckpt["top1"] > 0.5  # a trained model, so the comparison means something
    assert abs(int8["top1"] - fp32["top1"]) <= 0.02, (fp32["top1"], int8["top1"])
    assert int8["ckpt_path"] == graphs["int8"]


@pytest.mark.slow
def test_analyze_quantization_reports_known_sqnr_and_validates_numbers(graphs, ckpt_metrics, digits, tmp_path):
    # the fully folded checkpoint with its stem conv replaced by a hand-built kernel of known SQNR
    state, meta = read_checkpoint(graphs["ckpt"])
    state["conv1.weight"] = hand_kernel(*state["conv1.weight"].shape[:3]).astype(np.float32)
    hand = str(tmp_path / "hand.ckpt")
    write_checkpoint(hand, state, meta)
    out = tmp_path / "out"
    res = run_script("analyze.py", "quantization", "--ckpt_path", graphs["acb"], graphs["ckpt"], hand,
                     "--labels", "acb", "folded", "hand", "--data_dir", digits, "--num_parallel_workers", 1,
                     "--calib_samples", 64, "--out", out)
    assert res.returncode == 0, res.stderr[-3000:]
    assert_clean_exit(res)
    result = json.load(open(out / "quantization.json"))
    assert os.path.isfile(out / "quantization.png")
    acb, folded, hand_row = result["checkpoints"]
    assert [acb["form"], folded["form"], hand_row["form"]] == ["acb", "folded", "folded"]
    layers = {r["layer"]: r for r in hand_row["layers"]}
    assert layers["conv1"]["sqnr_db"] == pytest.approx(10 * math.log10((1 + E ** 2) / E ** 2), rel=1e-5)
    assert [r["layer"] for r in acb["layers"]] == [r["layer"] for r in folded["layers"]]
    assert "classifier" in layers and len(layers) == len(acb["layers"])
    # the ACB checkpoint folds in memory to the same weights as convert.py's: same statistics, same graphs
    for a, f in zip(acb["layers"], folded["layers"]):
        assert a["sqnr_db"] == pytest.approx(f["sqnr_db"], abs=1e-3), a["layer"]
        assert a["range_max"] == pytest.approx(f["range_max"], rel=1e-4), a["layer"]
    # end to end: the FP32 graph's top-1 is validate.py's number for the checkpoint
    ckpt = ckpt_metrics
    assert acb["fp32_top1"] == folded["fp32_top1"] == ckpt["top1"] and folded["samples"] == 359
    assert folded["drop"] == pytest.approx(folded["fp32_top1"] - folded["int8_top1"])
    assert folded["calibration"]["images"] == 64
    assert "layer of min SQNR" in res.stdout


def int8_scores(trained, digits, tmp_path, stem):
    """``convert.py --fold_bn --export onnx --int8`` of checkpoint ``trained`` (to ``<stem>.ckpt`` in
    ``tmp_path``, calibrated on 32 training digits), then validate.py's records of the checkpoint, the folded
    checkpoint, the FP32 graph and the INT8 graph."""
    deploy = str(tmp_path / f"{stem}.ckpt")
    res = run_script("convert.py", "--ckpt_path", trained, "--output", deploy, "--fold_bn", "--export", "onnx",
                     "--int8", "--calib_data", os.path.join(digits, "train"), "--calib_samples", 32)
    assert res.returncode == 0 and stderr_of(res).strip() == "", res.stderr[-3000:]
    return [validate(path, digits, tmp_path / f"{stem}{i}.json")[0]
            for i, path in enumerate((trained, deploy, str(tmp_path / f"{stem}.onnx"),
                                      str(tmp_path / f"{stem}.int8.onnx")))]


@pytest.mark.slow
def test_the_quant_aware_rep_form_goes_from_training_to_int8_and_strict_loads_into_the_plain_model(digits, tmp_path):
    """docs/models.md's commands for rep's quantization-aware form (on the small lists): train.py, convert.py
    --fold_bn --export onnx --int8, validate.py on the checkpoint and both graphs; the plain conversion
    strict-loads into the plain model."""
    import mindspore as ms
    from mindspore import Tensor

    from acnet_ms import create_model

    run = str(tmp_path / "qa_run")
    res = run_script("train.py", *small_run(digits, run, "--block_type", "rep", "--block_options",
                                            "{quant_aware: true}", "--epoch_size", 1, "--val_while_train", False))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "src20 (rep: quant_aware true), 10 classes" in res.stdout, res.stdout[:2000]
    trained = os.path.join(run, "src20_rep-e001.ckpt")
    arrays, meta = read_checkpoint(trained)
    assert any(k.endswith(".post_bn.gamma") for k in arrays) and not any("identity_bn" in k for k in arrays)
    assert not any(k.endswith(".scale.bn.gamma") for k in arrays)
    scores = int8_scores(trained, digits, tmp_path, "qa_deploy")
    assert len({r["correct1"] for r in scores[:3]}) == 1, [r["correct1"] for r in scores]  # the forms agree
    assert {r["samples"] for r in scores} == {60}  # the validation list the run recorded
    plain = str(tmp_path / "qa_plain.ckpt")
    res = run_script("convert.py", "--ckpt_path", trained, "--output", plain)
    assert res.returncode == 0, res.stderr[-3000:]
    state, _ = read_checkpoint(plain)
    base = create_model("src20", num_classes=10)  # the plain model (MindCV's own models: tests/test_rep.py)
    assert list(state) == [p.name for p in base.get_parameters()]
    params = {k: ms.Parameter(Tensor(v), name=k) for k, v in state.items()}
    assert ms.load_param_into_net(base, params, strict_load=True) == ([], [])


def test_the_ordinary_path_never_imports_onnx():
    code = ("import sys; sys.path.insert(0, '.'); import acnet_ms, acnet_ms.convert.pipeline, acnet_ms.analysis, "
            "acnet_ms.study, acnet_ms.convert.quantize; from acnet_ms.convert.quantize import weight_sqnr; "
            "assert not {'onnx', 'onnxruntime'} & set(sys.modules), sorted(sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


# ---------------------------------------------------------------- bad input

def make_graph(path, classes=3, output_rank=2):
    """A small valid ONNX graph: 1x3x16x16 -> global average pool -> (1, classes) or a 4-d output."""
    import mindspore  # noqa: F401
    from onnx import TensorProto, helper, save

    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"])]
    if output_rank == 2:
        nodes.append(helper.make_node("Flatten", ["p"], ["y"]))
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, classes])
    else:
        out = helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 3, 1, 1])
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [out])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def convert_case(kind, graphs, digits, tmp):
    out = str(tmp / "out" / "deploy.ckpt")
    base = ["--ckpt_path", graphs["acb"], "--output", out, "--fold_bn"]
    calib = ["--calib_data", os.path.join(digits, "train")]
    if kind == "no calib_data":
        return base + ["--export", "onnx", "--int8"], "--int8 needs --calib_data DIR"
    if kind == "no export":
        return base + ["--int8"] + calib, "--int8 needs --export onnx"
    if kind == "mindir export":
        return base + ["--export", "mindir", "--int8"] + calib, "--int8 needs --export onnx"
    if kind == "calib_data without int8":
        return base + ["--export", "onnx"] + calib, "--calib_data needs --int8"
    if kind == "no samples":
        return base + ["--export", "onnx", "--int8", "--calib_samples", 0] + calib, \
            "--calib_samples must be a positive whole number, got 0"
    if kind == "empty folder":
        (tmp / "empty").mkdir()
        return base + ["--export", "onnx", "--int8", "--calib_data", tmp / "empty"], \
            f"--calib_data: {tmp / 'empty'}: no class folders"
    if kind == "other classes":
        for c in range(3):
            src = os.path.join(digits, "train", str(c))
            (tmp / "three" / str(c)).mkdir(parents=True)
            name = sorted(os.listdir(src))[0]
            (tmp / "three" / str(c) / name).write_bytes(open(os.path.join(src, name), "rb").read())
        return base + ["--export", "onnx", "--int8", "--calib_data", tmp / "three"], \
            f"--calib_data {tmp / 'three'}: 3 class folders, but the model classifies 10 classes"
    if kind == "other image size":
        return base + ["--export", "onnx", "--input_shape", "1,3,32,32", "--int8"] + calib, \
            "--input_shape 1,3,32,32: the checkpoint is validated at 16x16 (its image_resize)"
    raise AssertionError(kind)


CONVERT_CASES = ["no calib_data", "no export", "mindir export", "calib_data without int8", "no samples",
                 "empty folder", "other classes", "other image size"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", CONVERT_CASES)
def test_convert_bad_int8_input_is_one_line_and_writes_nothing(kind, graphs, digits, tmp_path):
    args, message = convert_case(kind, graphs, digits, tmp_path)
    (tmp_path / "out").mkdir()
    res = run_script("convert.py", *args)
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr[-2000:])
    assert_clean_exit(res)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr
    assert os.listdir(tmp_path / "out") == []  # no checkpoint, no graph, no temporary file


def test_calibration_options_belong_to_the_quantization_analysis(tmp_path):
    res = run_script("analyze.py", "magnitude", "--ckpt_path", tmp_path / "a.ckpt", "--calib_data", tmp_path,
                     "--out", tmp_path / "out")
    assert res.returncode == 2 and not (tmp_path / "out").exists()
    assert stderr_of(res).strip() == "error: --calib_data applies to the quantization sub-command only", res.stderr


@pytest.mark.parametrize("kind", ["other classes", "not a classifier", "not onnx", "deploy"])
def test_validate_bad_graph_is_one_line(kind, digits, tmp_path):
    path = str(tmp_path / "g.onnx")
    extra = []
    if kind == "other classes":
        make_graph(path, classes=3)
        message = f"{path}: the graph classifies 3 classes, but the validation data"
    elif kind == "not a classifier":
        make_graph(path, output_rank=4)
        message = f"{path}: not a classifier: expected one (batch, classes) output"
    elif kind == "not onnx":
        open(path, "w").write("not a graph\n")
        message = f"{path}: not an ONNX graph onnxruntime can load"
    else:
        make_graph(path, classes=3)
        extra, message = ["--deploy"], "--deploy folds a checkpoint's ACBs; a graph has none"
    out = tmp_path / "m.json"
    res = run_script("validate.py", "--ckpt_path", path, "--data_dir", digits, "--json", out, *extra)
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr[-2000:])
    assert_clean_exit(res)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr
    assert not out.exists()
