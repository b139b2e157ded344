"""A conv's geometry as a type (acnet_ms.kinds.geometry.ConvGeometry), and the block Cells' arguments: the geometry
by position, the rest by keyword, the earlier positional orders still read with a FutureWarning."""
import warnings

import numpy as np
import pytest
from mindspore import Tensor, nn

from acnet_ms.kinds.acb.cell import ACBlock
from acnet_ms.kinds.dbb.cell import DiverseBranchBlock
from acnet_ms.kinds.geometry import ConvGeometry
from acnet_ms.kinds.orepa.cell import OREPABlock
from acnet_ms.kinds.rep.cell import RepBlock

CONVS = [dict(in_channels=4, out_channels=8, kernel_size=3, stride=2, pad_mode="same", group=2, has_bias=True),
         dict(in_channels=4, out_channels=4, kernel_size=3, pad_mode="pad", padding=(2, 0, 1, 1), dilation=2,
              group=4),
         dict(in_channels=3, out_channels=6, kernel_size=(1, 5), pad_mode="valid")]


@pytest.mark.parametrize("args", CONVS)
def test_a_conv_rebuilt_from_its_geometry_computes_like_it(args):
    conv = nn.Conv2d(**args)
    geometry = ConvGeometry.of(conv)
    again = geometry.conv()
    assert ConvGeometry.of(again) == geometry and again.has_bias == conv.has_bias
    assert not geometry.conv(has_bias=False).has_bias and geometry.replace(groups=1).groups == 1
    again.weight.set_data(conv.weight.value())
    if conv.has_bias:
        again.bias.set_data(conv.bias.value())
    x = Tensor(np.random.default_rng(0).normal(size=(2, args["in_channels"], 9, 10)).astype(np.float32))
    np.testing.assert_array_equal(again(x).asnumpy(), conv(x).asnumpy())


@pytest.mark.parametrize("cls", [ACBlock, DiverseBranchBlock, OREPABlock, RepBlock])
@pytest.mark.parametrize("args", CONVS[:2])
def test_a_block_built_from_a_conv_has_its_geometry(cls, args):
    conv = nn.Conv2d(**dict(args, has_bias=False))
    block = cls.from_conv(conv)
    assert block.conv_geometry == ConvGeometry.of(conv).replace(has_bias=False)
    with pytest.raises(ValueError, match="kernel 1x5 is not square"):
        cls.from_conv(nn.Conv2d(**CONVS[2]))


@pytest.mark.parametrize("cls, earlier", [
    (ACBlock, dict(gamma_init=0.5, deploy=False, branches="h")),
    (DiverseBranchBlock, dict(pad_mode="same", internal_channels=8)),
    (OREPABlock, dict(pad_mode="pad", has_bias=True)),
    (RepBlock, dict(num_kxk=2, scale=False)),
])
def test_options_by_position_still_read_in_the_earlier_order_with_a_warning(cls, earlier):
    geometry = (4, 4, 3, 1, 1, 1, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = cls(*geometry, *earlier.values())
    assert [w.category for w in caught] == [FutureWarning]
    assert all(name in str(caught[0].message) for name in earlier) and cls.__name__ in str(caught[0].message)
    new = cls(*geometry, **earlier)
    assert old.reparam_info() == new.reparam_info() and old.conv_geometry == new.conv_geometry
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cls(*geometry, **earlier)  # keywords: no warning
    name = next(iter(earlier))
    with pytest.raises(TypeError, match=f"multiple values for argument '{name}'"):
        cls(*geometry, earlier[name], **{name: earlier[name]})
    with pytest.raises(TypeError, match="takes 7 positional arguments"):
        cls(*geometry, *([None] * 20))
