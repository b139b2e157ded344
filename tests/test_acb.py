"""What is ACB's own: where the asymmetric windows sit, the one-conv form's gradients, the Cell's arguments, and
switching a compiled network.  Geometry, folds, gradients, from_plain, options, AMP and MindCV families:
tests/test_kind_contract.py."""

import numpy as np
import pytest
from helpers import Grads, assert_close, randomize_bn, assert_sample_sweep, SAMPLE_PARTS

import mindspore as ms
from mindspore import Tensor, nn, ops

from acnet_ms.kinds.acb.cell import ACBlock
from acnet_ms.reparam.switch import switch_to_deploy

TOL = 2e-5  # float32; errors seen are ~1e-6 relative

def test_asymmetric_windows_sit_on_the_centre_row_and_column():
    """Single-pixel input: each branch's response marks where its window reaches."""
    block = ACBlock(1, 1, 3, stride=1, padding=0, dilation=2)
    block.set_train(False)
    for branch in ("square", "hor", "ver"):
        conv = getattr(block, branch + "_conv")
        conv.weight.set_data(Tensor(np.ones(conv.weight.shape, np.float32) * (branch != "square")))
    x = np.zeros((1, 1, 9, 9), np.float32)
    x[0, 0, 4, 4] = 1.0
    y = block(Tensor(x)).asnumpy()[0, 0] / (1 / np.sqrt(1 + 1e-5))
    # output (i, j) sees rows i..i+4 and cols j..j+4 (step 2): centre row is i + 2, centre col j + 2
    expected = np.zeros((5, 5), np.float32)
    expected[2, 0:5:2] += 1  # horizontal taps: input row 4 == i + 2 -> i = 2; cols j, j+2, j+4 hit 4
    expected[0:5:2, 2] += 1
    np.testing.assert_allclose(y, expected, atol=1e-5)


def test_gamma_init_sets_all_three_bns():
    block = ACBlock(2, 2, 3, gamma_init=1 / 3)
    for branch in ("square", "hor", "ver"):
        np.testing.assert_allclose(getattr(block, branch + "_bn").gamma.asnumpy(), 1 / 3, rtol=1e-6)


@pytest.mark.graph
def test_switch_to_deploy_on_a_compiled_network_recompiles_and_renames():
    net = nn.SequentialCell([ACBlock(3, 4, 3), nn.Identity(), nn.ReLU()])
    randomize_bn(net, seed=3)
    net.set_train(False)
    x = Tensor(np.random.default_rng(2).normal(size=(1, 3, 8, 8)).astype(np.float32))
    before = net(x).asnumpy()
    switch_to_deploy(net)
    names = sorted(p.name for p in net.get_parameters())  # one conv: its kernel and bias, under the block's name
    assert len(names) == 2 and all(n.startswith("0.") for n in names) and names[1].endswith(".weight")
    assert_close(net(x).asnumpy(), before, TOL)
    switch_to_deploy(net)  # idempotent
    assert_close(net(x).asnumpy(), before, TOL)


@pytest.mark.parametrize("bad", [dict(kernel_size=4), dict(kernel_size=1), dict(kernel_size=3.0),
                                 dict(kernel_size=3, groups=3), dict(kernel_size=3, padding=-1)])
def test_bad_arguments_fail_at_construction(bad):
    with pytest.raises(ValueError, match="kernel_size|groups|padding"):
        ACBlock(4, 4, **bad)


def test_one_conv_form_has_the_three_conv_forms_gradients():
    """branch_bn=False trains as ONE conv over the summed kernel: same outputs and gradients as the sum of
    three convs (the asymmetric ones cropped/padded onto the square window) for every parameter."""
    block = ACBlock(3, 4, 3, stride=2, padding=0, branch_bn=False)
    rng = np.random.default_rng(5)
    for name in ("square", "hor", "ver"):
        w = getattr(block, name + "_conv").weight
        w.set_data(Tensor(rng.normal(size=w.shape).astype(np.float32)))

    class ThreeConvs(nn.Cell):
        """The reference: three explicit convs on crops of the input, as the three-branch form computes."""

        def __init__(self, b):
            super().__init__()
            self.b = b

        def construct(self, x):
            sq = ops.conv2d(x, self.b.square_conv.weight, stride=2)
            hor = ops.conv2d(x[:, :, 1:x.shape[2] - 1, :], self.b.hor_conv.weight, stride=2)
            ver = ops.conv2d(x[:, :, :, 1:x.shape[3] - 1], self.b.ver_conv.weight, stride=2)
            return sq + hor + ver

    x = Tensor(rng.normal(size=(2, 3, 9, 9)).astype(np.float32))
    weights = ms.ParameterTuple(block.trainable_params())
    assert len(weights) == 3

    def grads_of(net):
        return Grads(net, weights)(x)

    assert_close(block(x).asnumpy(), ThreeConvs(block)(x).asnumpy(), TOL, "outputs")
    for w, g1, g2 in zip(weights, grads_of(block), grads_of(ThreeConvs(block))):
        assert np.abs(g2.asnumpy()).max() > 0
        assert_close(g1.asnumpy(), g2.asnumpy(), TOL, w.name)


@pytest.mark.parametrize("bad, match", [(dict(branches="x"), "branches"), (dict(position="edge"), "position"),
                                        (dict(has_bias=True), "has_bias"), (dict(pad_mode="full"), "pad_mode")])
def test_bad_variant_arguments_fail_at_construction(bad, match):
    with pytest.raises(ValueError, match=match):
        ACBlock(4, 4, 3, **bad)


@pytest.mark.parametrize("part", SAMPLE_PARTS)
def test_the_sample_sweep_trains_converts_and_strict_loads_each_site_type(part, tmp_path):
    """A MindCV model per site type (BN-free, grouped, depthwise, dilated, a deep ResNet) through the zoo sweep's
    stages with acb blocks: a train step under the recipe's AMP level in PyNative (and graph mode for the cheap
    ones), conversion, strict load, the folded function; ``ci``: the BN-free model in PyNative, ``zoo``: the rest
    (``make test-all``)."""
    assert_sample_sweep("acb", tmp_path, part)
