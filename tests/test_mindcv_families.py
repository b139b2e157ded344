"""Every MindCV CNN family of docs/families.md's table: ACB model -> convert -> strict load into the stock MindCV
model -> same logits.  The five kinds of site (plain, depthwise, grouped, pre-activation, biased: resnet18,
mobilenet_v2_035_96, regnet_x_200mf, densenet121, squeezenet1_1) run for every kind in
tests/test_kind_contract.py; the other members here, for ACB."""
import os

import numpy as np
import pytest
from helpers import assert_close, randomize_bn

import mindspore as ms
from mindspore import Tensor

from acnet_ms import block_summary, create_model
from acnet_ms.io.checkpoint import read_checkpoint, write_checkpoint
from acnet_ms.convert.pipeline import convert_checkpoint
from acnet_ms.models.factory import build_uninitialised

TOL = 1e-4  # relative to the largest logit

#: one small member per family, and the input size it runs at (the smallest its head accepts)
ALL_FAMILIES = {
    "resnet18": 64, "resnext50_32x4d": 64, "seresnet18": 64, "res2net50": 64, "resnest14": 64,
    "regnet_x_200mf": 64, "mobilenet_v1_025": 64, "mobilenet_v2_035_96": 64, "mobilenet_v3_small_075": 64,
    "mnasnet_050": 64, "efficientnet_b0": 64, "ghostnet_050": 64, "shufflenet_v1_g3_05": 64,
    "shufflenet_v2_x0_5": 64, "googlenet": 64, "inception_v3": 299, "xception": 71, "densenet121": 64,
    "dpn92": 64, "vgg11": 224, "squeezenet1_1": 64, "hrnet_w32": 64,
}
#: those the kind contract does not run
FAMILIES = {k: v for k, v in ALL_FAMILIES.items()
            if k not in ("resnet18", "mobilenet_v2_035_96", "regnet_x_200mf", "densenet121", "squeezenet1_1")}


#: the members that take 15 s or more here (120 M dense weights in vgg11; deep multi-branch graphs): the zoo lane
ZOO = ("vgg11", "hrnet_w32", "res2net50", "dpn92", "inception_v3")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.zoo) if n in ZOO else n for n in sorted(FAMILIES)])
@pytest.mark.slow
def test_acb_model_converts_to_the_stock_mindcv_checkpoint(name, tmp_path):
    import mindcv

    size = FAMILIES[name]
    ms.set_seed(1)
    acb = randomize_bn(create_model(name, num_classes=10, block_type="acb"), seed=2)
    report = block_summary(acb)
    assert report["acbs"] == sum(type(c).__name__ == "ACBlock" for _, c in acb.cells_and_names()) > 0
    src, dst = str(tmp_path / "acb.ckpt"), str(tmp_path / "plain.ckpt")
    write_checkpoint(src, {p.name: p.asnumpy() for p in acb.get_parameters()},
                     dict(model=name, block_type="acb", num_classes=10))
    summary = convert_checkpoint(src, dst, log=lambda *_: None)
    assert summary["acbs"] == report["acbs"]

    stock = build_uninitialised(lambda: mindcv.create_model(name, num_classes=10))  # its weights: the file's
    arrays, _ = read_checkpoint(dst)
    assert list(arrays) == [p.name for p in stock.get_parameters()]  # names and order
    params = {k: ms.Parameter(Tensor(v), name=k) for k, v in arrays.items()}
    not_loaded, unused = ms.load_param_into_net(stock, params, strict_load=True)
    assert not_loaded == [] and unused == []

    x = Tensor(np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32))
    acb.set_train(False)
    stock.set_train(False)
    expected = acb(x).asnumpy()
    got = stock(x).asnumpy()
    assert np.abs(expected).max() > 0
    assert_close(got, expected, TOL, name)
    assert os.path.getsize(dst) < os.path.getsize(src)
