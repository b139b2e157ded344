"""The numpy fold functions, checked against a direct numpy convolution (no MindSpore)."""
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT

from acnet_ms.kinds.acb import fold as acb_fold
from acnet_ms.kinds import identities
from acnet_ms.reparam import state as state_map


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


def bn(y, gamma, beta, mean, var, eps=identities.BN_EPS):
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
    kernel, bias = acb_fold.fold_acb(sq, hor, ver)
    got = conv2d(x, kernel, stride, (p, p), dilation) + bias.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)


def test_fuse_bn_and_bias_as_bn_are_exact():
    rng = np.random.default_rng(0)
    kernel, gamma, beta, mean, var = random_branch(rng, (4, 3, 3, 3))
    x = rng.normal(size=(1, 3, 6, 6))
    k, b = identities.fuse_bn(kernel, gamma, beta, mean, var)
    np.testing.assert_allclose(conv2d(x, k) + b.reshape(1, -1, 1, 1),
                               bn(conv2d(x, kernel), gamma, beta, mean, var), rtol=1e-12, atol=1e-12)
    slot = identities.bias_as_bn(b)
    y = conv2d(x, k)
    np.testing.assert_allclose(bn(y, slot["gamma"], slot["beta"], slot["moving_mean"], slot["moving_variance"]),
                               y + b.reshape(1, -1, 1, 1), rtol=1e-12, atol=1e-12)


def test_embed_center_places_rows_and_columns_in_the_middle():
    hor = np.arange(5, dtype=np.float32).reshape(1, 1, 1, 5) + 1
    ver = hor.reshape(1, 1, 5, 1)
    assert identities.embed_center(hor, 5)[0, 0, 2].tolist() == [1, 2, 3, 4, 5]
    assert identities.embed_center(ver, 5)[0, 0, :, 2].tolist() == [1, 2, 3, 4, 5]
    assert np.count_nonzero(identities.embed_center(hor, 5)) == 5
    assert identities.embed_center(hor, 5).dtype == np.float32
    with pytest.raises(ValueError):
        identities.embed_center(np.zeros((1, 1, 1, 4)), 5)


def test_fold_state_maps_names_drops_trainer_state_and_keeps_dtype():
    rng = np.random.default_rng(1)
    state = {"stem.weight": rng.normal(size=(2, 2, 1, 1)).astype(np.float32)}
    for br, shape in (("square", (4, 2, 3, 3)), ("hor", (4, 2, 1, 3)), ("ver", (4, 2, 3, 1))):
        kernel, *bn_arrays = (a.astype(np.float32) for a in random_branch(rng, shape))
        state[f"layer1.0.conv2.{br}_conv.weight"] = kernel
        state.update({f"layer1.0.conv2.{br}_bn.{f}": a for f, a in zip(identities.BN_FIELDS, bn_arrays)})
    state["moments.layer1.0.conv2.square_conv.weight"] = np.zeros((4, 2, 3, 3), np.float32)
    state["learning_rate"] = np.float32(0.1)
    layout = {"layer1.0.conv2": dict(kind="acb", slot="bn", bn="layer1.0.bn2")}
    out, acbs = state_map.fold_state(state, layout)
    assert acbs == ["layer1.0.conv2"]
    assert sorted(out) == ["layer1.0.bn2.beta", "layer1.0.bn2.gamma", "layer1.0.bn2.moving_mean",
                           "layer1.0.bn2.moving_variance", "layer1.0.conv2.weight", "stem.weight"]
    assert out["layer1.0.conv2.weight"].dtype == np.float32 and out["layer1.0.conv2.weight"].shape == (4, 2, 3, 3)
    # the same ACB folding into its conv's own bias
    out_bias, _ = state_map.fold_state(state, {"layer1.0.conv2": dict(kind="acb", slot="bias", bn=None)})
    assert sorted(out_bias) == ["layer1.0.conv2.bias", "layer1.0.conv2.weight", "stem.weight"]
    np.testing.assert_array_equal(out_bias["layer1.0.conv2.bias"], out["layer1.0.bn2.beta"])
    with pytest.raises(ValueError, match="not part of this model"):
        state_map.fold_state(state, {})
    del state["layer1.0.conv2.hor_bn.moving_mean"]
    with pytest.raises(ValueError, match="hor_bn.moving_mean"):
        state_map.fold_state(state, layout)


def test_fold_modules_do_not_import_mindspore():
    code = "import sys; import acnet_ms.kinds.identities, acnet_ms.reparam.state; assert 'mindspore' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


@pytest.mark.parametrize("position", ["center", "corner"])
@pytest.mark.parametrize("branches", ["hv", "h", "v"])
def test_fold_acb_variants_equal_their_branches(position, branches):
    """Every variant folds exactly: branch BNs or none, one or both asymmetric kernels, centre or corner."""
    rng = np.random.default_rng(len(position) + len(branches))
    k, pad = 3, 1
    sq, hor, ver = (random_branch(rng, (3, 2) + s) for s in ((k, k), (1, k), (k, 1)))
    x = rng.normal(size=(2, 2, 9, 10))
    row, col = acb_fold.asym_offsets(k, position)
    # the 1 x k window on row `row` of the k x k window: pad the rows by pad - row on top
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    h_out = conv2d(xp[:, :, row:xp.shape[2] - (k - 1 - row)], hor[0])
    v_out = conv2d(xp[:, :, :, col:xp.shape[3] - (k - 1 - col)], ver[0])
    for with_bn in (True, False):
        use = lambda b, y: bn(y, *b[1:]) if with_bn else y  # noqa: E731
        ref = use(sq, conv2d(xp, sq[0]))
        if "h" in branches:
            ref = ref + use(hor, h_out)
        if "v" in branches:
            ref = ref + use(ver, v_out)
        pick = (lambda b: b) if with_bn else (lambda b: b[:1])
        kernel, bias = acb_fold.fold_acb(pick(sq), pick(hor) if "h" in branches else None,
                                     pick(ver) if "v" in branches else None, position=position)
        got = conv2d(xp, kernel) + (bias.reshape(1, -1, 1, 1) if bias is not None else 0)
        assert (bias is None) == (not with_bn)
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)


def grouped_conv(x, w, groups, stride=1, pad=(0, 0)):
    """``conv2d`` in ``groups`` groups (float64 reference)."""
    ci, co = x.shape[1] // groups, w.shape[0] // groups
    return np.concatenate([conv2d(x[:, g * ci:(g + 1) * ci], w[g * co:(g + 1) * co], stride, pad)
                           for g in range(groups)], axis=1)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_identity_and_average_kernels_are_the_identity_and_average_pooling(groups):
    rng = np.random.default_rng(groups)
    x = rng.normal(size=(2, 4, 7, 7))
    for k in (1, 3, 5):
        ident = identities.identity_kernel(4, 4 // groups, k)
        np.testing.assert_allclose(grouped_conv(x, ident, groups, pad=(k // 2, k // 2)), x, atol=1e-12)
    k = 3
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    pooled = np.mean([padded[:, :, a:a + 7, b:b + 7] for a in range(k) for b in range(k)], axis=0)
    np.testing.assert_allclose(grouped_conv(x, identities.avg_kernel(4, 4 // groups, k), groups, pad=(1, 1)),
                               pooled, atol=1e-12)


@pytest.mark.parametrize("groups,stride", [(1, 1), (2, 2), (4, 1)])
def test_merge_sequential_equals_a_1x1_conv_then_a_kxk_conv_padded_with_its_output_at_zero(groups, stride):
    """K2 * pad_{b1}(K1 * x + b1) + b2, the pad carrying b1 per channel (DBB's BN-and-pad)."""
    rng = np.random.default_rng(groups + stride)
    c, d, o, k = 4, 8, 6 if groups != 4 else 8, 3
    x = rng.normal(size=(2, c, 8, 8))
    k1, b1 = rng.normal(size=(d, c // groups, 1, 1)), rng.normal(size=d)
    k2, b2 = rng.normal(size=(o, d // groups, k, k)), rng.normal(size=o)
    mid = grouped_conv(x, k1, groups) + b1.reshape(1, -1, 1, 1)
    mid = np.pad(mid - b1.reshape(1, -1, 1, 1), ((0, 0), (0, 0), (1, 1), (1, 1))) + b1.reshape(1, -1, 1, 1)
    expected = grouped_conv(mid, k2, groups, stride) + b2.reshape(1, -1, 1, 1)
    kernel, bias = identities.merge_sequential(k1, b1, k2, b2, groups)
    got = grouped_conv(x, kernel, groups, stride, pad=(1, 1)) + bias.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(got, expected, atol=1e-10)
