"""analyze.py and acnet_ms.analysis: kernel magnitude, skeleton sparsity, flip/rotation robustness."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import (ROOT, assert_clean_exit, assert_one_line_error, run_main, run_script, stderr_of,
                     training_checkpoint, user_env)

from acnet_ms import analysis
from acnet_ms.analysis import Subject
from acnet_ms.io.checkpoint import read_checkpoint, write_checkpoint

EPS = 1e-5  # BatchNorm epsilon of every model


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def forms(trained_run, tmp_path_factory):
    """A trained ACB src20 checkpoint (two epochs on the small digits lists) and its plain and fully folded forms."""
    acb = os.path.join(trained_run[0], "src20_acb-e002.ckpt")
    folder = str(tmp_path_factory.mktemp("analysis_forms"))
    out = {"acb": acb}
    for form, extra in (("plain", []), ("folded", ["--fold_bn"])):
        out[form] = os.path.join(folder, f"{form}.ckpt")
        conv = run_script("convert.py", "--ckpt_path", acb, "--output", out[form], *extra)
        assert conv.returncode == 0, conv.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def folded(tmp_path_factory):
    """A fully folded src20 checkpoint of random weights: enough for the input checks."""
    from acnet_ms.convert.pipeline import convert_checkpoint

    folder = tmp_path_factory.mktemp("folded")
    training_checkpoint(str(folder / "acb.ckpt"), "src20", seed=3)
    convert_checkpoint(str(folder / "acb.ckpt"), str(folder / "folded.ckpt"), fold_bn=True, log=lambda line: None)
    return str(folder / "folded.ckpt")


def analyze(*args):
    res = run_script("analyze.py", *args)
    assert res.returncode == 0, res.stderr[-3000:]
    assert_clean_exit(res)
    return res


def validate_top1(*args):
    """validate.py's top-1 and correct count, through its --json output."""
    out = os.path.join(str(args[-1]), "validate.json")
    res = run_script("validate.py", *args[:-1], "--json", out)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.load(open(out))
    return metrics["top1"], metrics["correct1"], metrics["samples"]


# ---------------------------------------------------------------- pure numpy: definitions with known answers

def test_magnitude_of_hand_built_kernels():
    p = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], float)
    a = np.stack([p[None], -3 * p[None]])              # (2, 1, 3, 3): mean |W| = 2 p, max 8 -> p / 4
    b = np.zeros((1, 2, 3, 3))
    b[0, 0] = 1
    b[0, 1, 0, 0] = 2                                  # mean |W| = 0.5, top-left 1.5 -> 1/3, top-left 1
    zero = np.zeros((3, 2, 3, 3))                      # no largest entry: skipped
    d = np.zeros((1, 1, 5, 5))
    d[0, 0, :, 2] = 1
    d[0, 0, 2, :] = -2                                 # 5 x 5: the centre row 1, the rest of the column 0.5
    result = analysis.kernel_magnitudes({"a": a, "b": b, "z": zero, "d": d})
    expected3 = (p / 4 + np.where(np.arange(9).reshape(3, 3) == 0, 1.0, 1 / 3)) / 2
    got3 = result["sizes"]["3"]
    assert got3["layers"] == 2 and got3["skipped"] == 1
    np.testing.assert_allclose(got3["matrix"], expected3, rtol=1e-12)
    assert got3["matrix"][0][0] == pytest.approx(0.625) and got3["matrix"][1][1] == pytest.approx(2 / 3)
    assert got3["centre"] == pytest.approx(2 / 3)
    assert got3["skeleton"] == pytest.approx((expected3[1].sum() + expected3[0, 1] + expected3[2, 1]) / 5)
    assert got3["corner"] == pytest.approx((0.625 + 3 * (0.25 + 1 / 3) / 2) / 4)
    expected5 = np.zeros((5, 5))
    expected5[2, :] = 1
    expected5[[0, 1, 3, 4], 2] = 0.5
    np.testing.assert_allclose(result["sizes"]["5"]["matrix"], expected5)
    assert sorted(result["layers"]) == ["a", "b", "d"]


def test_magnitude_reads_bn_folded_kernels_so_bn_scales_count():
    w = np.zeros((2, 1, 3, 3), np.float32)
    w[0] = 1
    w[1, 0, 0, 0] = 1
    arrays = {"conv1.weight": w, "bn1.gamma": np.array([1, 3], np.float32), "bn1.beta": np.zeros(2, np.float32),
              "bn1.moving_mean": np.zeros(2, np.float32),
              "bn1.moving_variance": np.full(2, 1 - EPS, np.float32)}  # BN scale t = gamma
    # src20's conv1 -> bn1 is a conv/BN pair of the model; the rest of the model is absent and left alone
    result = analysis.magnitude([Subject("x", "x.ckpt", arrays, {"model": "src20", "num_classes": 10})])
    row = result["checkpoints"][0]
    assert row["form"] == "plain"
    expected = np.full((3, 3), 0.25)  # folded: channel 0 all 1, channel 1 a 3 at the top left -> (1 + 3) / 2 = 2
    expected[0, 0] = 1
    np.testing.assert_allclose(row["sizes"]["3"]["matrix"], expected, rtol=1e-5)


def test_position_groups():
    m3 = {g: analysis.position_mask(3, g) for g in analysis.GROUPS}
    assert m3["skeleton"].astype(int).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert m3["corner"].astype(int).tolist() == [[1, 0, 1], [0, 0, 0], [1, 0, 1]]
    assert m3["all"].all()
    m5 = {g: analysis.position_mask(5, g) for g in analysis.GROUPS}
    assert m5["skeleton"].sum() == 9 and m5["corner"].sum() == 16
    assert not (m5["skeleton"] & m5["corner"]).any() and (m5["skeleton"] | m5["corner"]).all()


def test_sparsify_zeroes_exactly_the_fraction_at_the_group_and_nests_over_ratios():
    rng = np.random.default_rng(3)
    kernel = rng.uniform(0.5, 1.0, (4, 3, 3, 3)).astype(np.float32)
    skeleton = analysis.position_mask(3, "skeleton")
    half = analysis.sparsify(kernel, "skeleton", 0.5, np.random.default_rng(7))
    assert (half == 0).sum() == 30  # 4 * 3 kernels x 5 skeleton entries = 60
    assert (half[..., ~skeleton] == kernel[..., ~skeleton]).all()  # corners untouched
    fewer = analysis.sparsify(kernel, "skeleton", 0.3, np.random.default_rng(7))
    assert (fewer == 0).sum() == 18 and ((fewer == 0) <= (half == 0)).all()  # same seed: nested
    other = analysis.sparsify(kernel, "skeleton", 0.5, np.random.default_rng(8))
    assert ((other == 0) != (half == 0)).any()  # another seed: another set
    corners5 = analysis.sparsify(rng.uniform(1, 2, (2, 2, 5, 5)), "corner", 0.25, np.random.default_rng(0))
    assert (corners5 == 0).sum() == 16 and (corners5[..., analysis.position_mask(5, "skeleton")] != 0).all()
    assert (kernel != 0).all()  # the input is not modified


@pytest.mark.slow
def test_sparsity_r1_on_all_positions_leaves_no_nonzero_kxk_weight(forms):
    for form in ("acb", "folded"):
        arrays, meta = read_checkpoint(forms[form])
        state, _ = Subject(form, forms[form], arrays, meta).plain_state()
        names = analysis.square_kernel_names(state)
        assert len(names) == 19 and all(np.count_nonzero(state[n]) > 0 for n in names)
        zeroed = analysis.sparsify_all({n: state[n] for n in names}, "all", 1.0, seed=0)
        assert sorted(zeroed) == sorted(names)
        assert all(np.count_nonzero(v) == 0 and v.shape == state[n].shape for n, v in zeroed.items())


def test_transforms_on_nchw_batches():
    x = np.array([[1, 2], [3, 4]]).reshape(1, 1, 2, 2)
    got = {name: f(x)[0, 0].tolist() for name, f in analysis.TRANSFORMS.items()}
    assert got == {"identity": [[1, 2], [3, 4]], "flip_lr": [[2, 1], [4, 3]], "flip_ud": [[3, 4], [1, 2]],
                   "rot90": [[2, 4], [1, 3]], "rot180": [[4, 3], [2, 1]], "rot270": [[3, 1], [4, 2]]}


def test_evaluate_applies_each_transform_to_the_batch():
    """A "network" whose logits are the image's top row: each transform's top-1 is known."""
    import mindspore as ms

    from acnet_ms.engine.evaluation import evaluate

    class TopRow:
        def set_train(self, mode):
            pass

        def __call__(self, image):
            return image[:, 0, 0, :]

    class Loader:
        def create_tuple_iterator(self, num_epochs):
            image = (10 * np.arange(4)[:, None] + np.arange(4)).astype(np.float32)  # top row 0 1 2 3
            return iter([(ms.Tensor(image[None, None]), ms.Tensor(np.array([3], np.int32)))])

    got = {t: evaluate(TopRow(), Loader(), transform=f)["top1"] for t, f in analysis.TRANSFORMS.items()}
    # top rows: 0 1 2 3 | 3 2 1 0 | 30 31 32 33 | 3 13 23 33 | 33 32 31 30 | 30 20 10 0
    assert got == {"identity": 1, "flip_lr": 0, "flip_ud": 1, "rot90": 1, "rot180": 0, "rot270": 0}


# ---------------------------------------------------------------- analyze.py end to end

@pytest.mark.slow
def test_magnitude_is_the_same_for_every_checkpoint_form(forms, tmp_path):
    out = str(tmp_path / "out")
    res = analyze("magnitude", "--ckpt_path", forms["acb"], forms["plain"], forms["folded"],
                  "--labels", "acb", "plain", "folded", "--out", out)
    result = json.load(open(os.path.join(out, "magnitude.json")))
    assert sorted(os.listdir(out)) == ["magnitude.json", "magnitude.png"]  # no temporary files left
    rows = {r["label"]: r for r in result["checkpoints"]}
    assert [rows[k]["form"] for k in ("acb", "plain", "folded")] == ["acb", "plain", "folded"]
    ref = np.array(rows["folded"]["sizes"]["3"]["matrix"])
    assert rows["folded"]["sizes"]["3"]["layers"] == 19 and ref.max() == 1.0 and ref.min() > 0
    for label in ("acb", "plain"):
        np.testing.assert_allclose(rows[label]["sizes"]["3"]["matrix"], ref, rtol=1e-5)
    assert re.search(r"^plain +plain +3 +19 +1\.000 ", res.stdout, re.M), res.stdout
    assert f"wrote {os.path.join(out, 'magnitude.json')}" in res.stdout
    assert open(os.path.join(out, "magnitude.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_sparsity_at_r0_is_validates_number_and_r1_on_all_positions_predicts_one_class(forms, digits, tmp_path):
    out = str(tmp_path / "out")
    analyze("sparsity", "--ckpt_path", forms["acb"], forms["folded"], "--labels", "acb", "folded",
            "--ratios", "0", "0.5", "1", "--seeds", "0", "1", "--data_dir", digits, "--out", out)
    result = json.load(open(os.path.join(out, "sparsity.json")))
    assert result["ratios"] == [0, 0.5, 1] and result["seeds"] == [0, 1] and result["groups"] == list(analysis.GROUPS)
    for row, form in zip(result["checkpoints"], ("acb", "folded")):
        top1, correct, samples = validate_top1("--ckpt_path", forms[form], "--data_dir", digits, tmp_path)
        assert row["samples"] == samples == 60
        assert row["reference"] == top1 and round(top1 * samples) == correct
        for group, curve in row["curves"].items():
            assert len(curve["per_seed"]) == 2 and all(len(c) == 3 for c in curve["per_seed"])
            assert curve["mean"][0] == top1, group
        # every k x k kernel zero: the logits no longer depend on the image, one class of ten (6 of 60) is right
        assert [(c[0], c[2]) for c in row["curves"]["all"]["per_seed"]] == [(top1, 0.1)] * 2
    assert sorted(os.listdir(out)) == ["sparsity.json", "sparsity.png"]


def write_symmetric_digits(digits, root):
    """Each of the small validation list's digits averaged over the 8 flips and rotations, 16 x 16 pixels.

    Such an image is its own left-right / up-down flip and 90-degree rotation,
    so every transformed batch equals the original one.
    """
    from PIL import Image

    lines = []
    for line in open(os.path.join(digits, "val_small.txt")):
        rel, label = line.split()
        img = np.asarray(Image.open(os.path.join(digits, rel)).convert("L"), np.float64)
        img = np.kron(img, np.ones((2, 2)))  # 16 x 16, so the loader's resize to 16 changes nothing
        orbit = [np.rot90(v, k) for v in (img, img[:, ::-1]) for k in range(4)]
        sym = np.round(np.mean(orbit, axis=0)).astype(np.uint8)
        os.makedirs(os.path.join(root, "val", label), exist_ok=True)
        Image.fromarray(sym).convert("RGB").save(os.path.join(root, rel))
        lines.append(f"{rel} {label}")
    with open(os.path.join(root, "sym.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


@pytest.mark.slow
def test_robustness_on_images_that_every_transform_leaves_unchanged(forms, digits, tmp_path):
    sym = str(tmp_path / "sym")
    write_symmetric_digits(digits, sym)
    out = str(tmp_path / "out")
    res = analyze("robustness", "--ckpt_path", forms["acb"], "--data_dir", sym, "--val_list", "sym.txt",
                  "--out", out)
    row = json.load(open(os.path.join(out, "robustness.json")))["checkpoints"][0]
    top1, _, samples = validate_top1("--ckpt_path", forms["acb"], "--data_dir", sym, "--val_list", "sym.txt", tmp_path)
    assert row["samples"] == samples == 60
    assert row["top1"] == {t: top1 for t in analysis.TRANSFORMS}
    assert "identity  flip_lr  flip_ud    rot90   rot180   rot270" in res.stdout


@pytest.mark.slow
def test_stock_mindcv_checkpoint_with_model_option(digits, tmp_path):
    import mindcv
    import mindspore as ms

    ckpt = str(tmp_path / "resnet18.ckpt")
    ms.save_checkpoint(mindcv.create_model("resnet18", num_classes=10), ckpt)
    assert read_checkpoint(ckpt)[1] == {}  # no metadata: the model comes from --model
    options = ["--model", "resnet18", "--num_classes", 10, "--data_dir", digits, "--val_list", "val_small.txt",
               "--image_resize", 16, "--crop_pct", 1.0, "--batch_size", 30]
    results = {}
    for command, extra in (("magnitude", []), ("robustness", []),
                           ("sparsity", ["--ratios", 0, 0.5, "--seeds", 0, "--groups", "skeleton", "corner"])):
        out = str(tmp_path / command)
        analyze(command, "--ckpt_path", ckpt, "--labels", "mindcv", "--out", out, *options, *extra)
        results[command] = json.load(open(os.path.join(out, f"{command}.json")))["checkpoints"][0]
        assert os.path.isfile(os.path.join(out, f"{command}.png"))
    sizes = results["magnitude"]["sizes"]
    assert sorted(sizes) == ["3", "7"] and sizes["3"]["layers"] == 16 and sizes["7"]["layers"] == 1
    assert results["magnitude"]["form"] == "plain" and results["magnitude"]["model"] is None
    assert results["robustness"]["samples"] == results["sparsity"]["samples"] == 60
    assert results["sparsity"]["reference"] == results["robustness"]["top1"]["identity"]  # both validate.py's code


# ---------------------------------------------------------------- bad input

def no_kxk_checkpoint(tmp_path):
    path = str(tmp_path / "pointwise.ckpt")
    write_checkpoint(path, {"conv.weight": np.ones((4, 3, 1, 1), np.float32),
                            "fc.weight": np.ones((10, 4), np.float32), "fc.bias": np.zeros(10, np.float32)},
                     {"model": "src20"})
    return path


BAD = {
    "unknown sub-command": (lambda c, d, t: ["magnitudes", "--ckpt_path", c], "unknown sub-command 'magnitudes'"),
    "ratio above 1": (lambda c, d, t: ["sparsity", "--ckpt_path", c, "--data_dir", d, "--ratios", 0, 1.5],
                      "--ratios: 1.5 is outside [0, 1]"),
    "ratio not a number": (lambda c, d, t: ["sparsity", "--ckpt_path", c, "--data_dir", d, "--ratios", "0,x"],
                           "--ratios: 'x' is not a number"),
    "no kxk conv": (lambda c, d, t: ["magnitude", "--ckpt_path", no_kxk_checkpoint(t)],
                    "pointwise.ckpt: no k x k convolution (k > 1) to analyse"),
    "missing data": (lambda c, d, t: ["robustness", "--ckpt_path", c, "--data_dir", str(t / "nowhere")],
                     "nowhere: data_dir does not exist"),
    "label count": (lambda c, d, t: ["magnitude", "--ckpt_path", c, "--labels", "a", "b"],
                    "--labels: 2 labels for 1 checkpoint"),
    "missing checkpoint": (lambda c, d, t: ["magnitude", "--ckpt_path", str(t / "none.ckpt")],
                           "none.ckpt: no such file"),
    "unknown option": (lambda c, d, t: ["magnitude", "--ckpt_path", c, "--modle", "src20"], "unknown option '--modle'"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_input_is_one_line_and_writes_nothing(kind, folded, digits, tmp_path):
    make, message = BAD[kind]
    out = tmp_path / "out"
    # in this process; analyze.py's output and exit status end to end: the test without matplotlib below
    assert_one_line_error(run_main("analyze.py", *make(folded, digits, tmp_path), "--out", out), message)
    assert not out.exists()


def test_without_matplotlib_one_line_says_how_to_install_it(folded, tmp_path):
    fake = tmp_path / "fake" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    env = dict(user_env(), PYTHONPATH=str(tmp_path / "fake"))
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, os.path.join(ROOT, "analyze.py"), "magnitude", "--ckpt_path",
                          folded, "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2 and not out.exists()
    assert stderr_of(res).strip() == ("error: the figures need matplotlib, which is not installed: "
                                  "pip install -r requirements-study.txt")


def test_results_already_in_out_need_overwrite(folded, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "magnitude.json").write_text("{}\n")
    res = run_main("analyze.py", "magnitude", "--ckpt_path", folded, "--out", out)
    assert_one_line_error(res, f"{out / 'magnitude.json'} exists (results of an earlier analysis); choose another "
                          "--out, or pass --overwrite")
    assert (out / "magnitude.json").read_text() == "{}\n" and sorted(os.listdir(out)) == ["magnitude.json"]
    res = run_main("analyze.py", "magnitude", "--ckpt_path", folded, "--out", out, "--overwrite")
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.load(open(out / "magnitude.json"))["analysis"] == "magnitude"
