"""The numpy fold functions, checked against a direct numpy convolution (no MindSpore)."""
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from acnet_ms import fold


def conv2d(x, w, stride=1, pad=(0, 0), dilation=1):
    """Plain NCHW cross-correlation with symmetric (rows, cols) zero padding, groups=1."""
    x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    kh, kw = w.shape[2:]
    oh = (x.shape[2] - dilation * (kh - 1) - 1) // stride + 1
    ow = (x.shape[3] - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for a in range(kh):
        for b in range(kw):
            patch = x[:, :, a * dilation: a * dilation + stride * (oh - 1) + 1: stride,
                      b * dilation: b * dilation + stride * (ow - 1) + 1: stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, a, b])
    return out


def bn(y, gamma, beta, mean, var, eps=fold.BN_EPS):
    s = lambda v: v.reshape(1, -1, 1, 1)  # noqa: E731
    return s(gamma) * (y - s(mean)) / np.sqrt(s(var) + eps) + s(beta)


def random_branch(rng, shape):
    o = shape[0]
    return (rng.normal(size=shape), rng.uniform(0.5, 1.5, o), rng.normal(size=o), rng.normal(size=o),
            rng.uniform(0.5, 2.0, o))


@pytest.mark.parametrize("k,stride,dilation", [(3, 1, 1), (3, 2, 1), (5, 1, 2), (5, 2, 1)])
def test_fold_acb_equals_three_branches_with_same_padding(k, stride, dilation):
    rng = np.random.default_rng(k + stride + dilation)
    sq, hor, ver = (random_branch(rng, (3, 2) + s) for s in ((k, k), (1, k), (k, 1)))
    x = rng.normal(size=(2, 2, 11, 12))
    p = dilation * (k // 2)
    ref = (bn(conv2d(x, sq[0], stride, (p, p), dilation), *sq[1:])
           + bn(conv2d(x, hor[0], stride, (0, p), dilation), *hor[1:])
           + bn(conv2d(x, ver[0], stride, (p, 0), dilation), *ver[1:]))
    kernel, bias = fold.fold_acb(sq, hor, ver)
    got = conv2d(x, kernel, stride, (p, p), dilation) + bias.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)


def test_fuse_bn_and_bias_as_bn_are_exact():
    rng = np.random.default_rng(0)
    kernel, gamma, beta, mean, var = random_branch(rng, (4, 3, 3, 3))
    x = rng.normal(size=(1, 3, 6, 6))
    k, b = fold.fuse_bn(kernel, gamma, beta, mean, var)
    np.testing.assert_allclose(conv2d(x, k) + b.reshape(1, -1, 1, 1),
                               bn(conv2d(x, kernel), gamma, beta, mean, var), rtol=1e-12, atol=1e-12)
    slot = fold.bias_as_bn(b)
    y = conv2d(x, k)
    np.testing.assert_allclose(bn(y, slot["gamma"], slot["beta"], slot["moving_mean"], slot["moving_variance"]),
                               y + b.reshape(1, -1, 1, 1), rtol=1e-12, atol=1e-12)


def test_embed_center_places_rows_and_columns_in_the_middle():
    hor = np.arange(5, dtype=np.float32).reshape(1, 1, 1, 5) + 1
    ver = hor.reshape(1, 1, 5, 1)
    assert fold.embed_center(hor, 5)[0, 0, 2].tolist() == [1, 2, 3, 4, 5]
    assert fold.embed_center(ver, 5)[0, 0, :, 2].tolist() == [1, 2, 3, 4, 5]
    assert np.count_nonzero(fold.embed_center(hor, 5)) == 5
    assert fold.embed_center(hor, 5).dtype == np.float32
    with pytest.raises(ValueError):
        fold.embed_center(np.zeros((1, 1, 1, 4)), 5)


def test_fold_state_maps_names_drops_trainer_state_and_keeps_dtype():
    rng = np.random.default_rng(1)
    state = {"stem.weight": rng.normal(size=(2, 2, 1, 1)).astype(np.float32)}
    for br, shape in (("square", (4, 2, 3, 3)), ("hor", (4, 2, 1, 3)), ("ver", (4, 2, 3, 1))):
        kernel, *bn_arrays = (a.astype(np.float32) for a in random_branch(rng, shape))
        state[f"layer1.0.conv2.{br}_conv.weight"] = kernel
        state.update({f"layer1.0.conv2.{br}_bn.{f}": a for f, a in zip(fold.BN_FIELDS, bn_arrays)})
    state["moments.layer1.0.conv2.square_conv.weight"] = np.zeros((4, 2, 3, 3), np.float32)
    state["learning_rate"] = np.float32(0.1)
    out, acbs = fold.fold_state(state)
    assert acbs == ["layer1.0.conv2"]
    assert sorted(out) == ["layer1.0.bn2.beta", "layer1.0.bn2.gamma", "layer1.0.bn2.moving_mean",
                           "layer1.0.bn2.moving_variance", "layer1.0.conv2.weight", "stem.weight"]
    assert out["layer1.0.conv2.weight"].dtype == np.float32 and out["layer1.0.conv2.weight"].shape == (4, 2, 3, 3)
    del state["layer1.0.conv2.hor_bn.moving_mean"]
    with pytest.raises(ValueError, match="hor_bn.moving_mean"):
        fold.fold_state(state)


def test_bn_slot_naming_rule():
    assert fold.bn_slot_for("conv1") == "bn1"
    assert fold.bn_slot_for("layer3.5.conv2") == "layer3.5.bn2"
    assert fold.bn_slot_for("layer1.0.conv1.paths.1.features.0") == "layer1.0.conv1.paths.1.features.1"
    with pytest.raises(ValueError):
        fold.bn_slot_for("layer1.0.proj")


def test_fold_module_does_not_import_mindspore():
    code = "import sys; import acnet_ms.fold; assert 'mindspore' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
