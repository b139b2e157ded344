"""Registry and ResNets: MindCV's models by name, ACBs exactly where ACNet puts them."""
import numpy as np
import pytest
from helpers import assert_close, slow_except

from mindspore import Tensor, nn

from acnet_ms import create_model, list_models, model_entry
from acnet_ms.kinds.acb.cell import ACBlock

IMAGENET = ["sres18", "sres34", "sres50", "sres101", "sres152"]


def shapes(net):
    return {p.name: tuple(p.shape) for p in net.get_parameters()}


@pytest.mark.parametrize("name", slow_except(IMAGENET, "sres18", "sres34", "sres50"))
def test_documented_resnet_names_are_mindcvs_models(name):
    import mindcv

    assert model_entry(name).mindcv == "resnet" + name[4:]
    ours = shapes(create_model(name, num_classes=17))
    theirs = shapes(mindcv.create_model(model_entry(name).mindcv, num_classes=17))
    assert list(ours) == list(theirs)  # same names in the same order
    assert ours == theirs


@pytest.mark.parametrize("name", ["sres18", "sres50", "src56"])
def test_acb_replaces_exactly_the_kxk_convs_with_1_lt_k_lt_7(name):
    base = create_model(name)
    acb = create_model(name, block_type="acb")
    base_convs = {n: c for n, c in base.cells_and_names() if isinstance(c, nn.Conv2d)}
    acb_cells = dict(acb.cells_and_names())
    n_acb = 0
    for cname, conv in base_convs.items():
        k = conv.kernel_size[0]
        target = acb_cells[cname]
        if 1 < k < 7:
            assert isinstance(target, ACBlock) and target.kernel_size == k, cname
            assert target.stride == tuple(conv.stride[-2:]) and target.groups == conv.group
            bn = acb.acnet.blocks[cname]["bn_cell"]
            assert isinstance(acb_cells[bn], nn.Identity) and isinstance(dict(base.cells_and_names())[bn],
                                                                           nn.BatchNorm2d)
            n_acb += 1
        else:
            assert type(target) is nn.Conv2d and target.kernel_size == conv.kernel_size, cname
    assert n_acb == sum(isinstance(c, ACBlock) for _, c in acb.cells_and_names()) > 0
    assert sum(1 for _, c in base.cells_and_names() if isinstance(c, ACBlock)) == 0


@pytest.mark.slow
def test_cifar_models_have_three_stages_of_6n_plus_2():
    for name, n in (("src56", 9), ("src110", 18)):
        net = create_model(name)
        assert [len(getattr(net, f"layer{i}")) for i in (1, 2, 3)] == [n, n, n]
        assert not hasattr(net, "layer4")
        assert net.classifier.weight.shape == (10, 64)
        assert model_entry(name).input_size == 32
    net = create_model("src56", block_type="acb", gamma_init=1 / 3)
    net.set_train(False)
    assert net(Tensor(np.zeros((2, 3, 32, 32), np.float32))).shape == (2, 10)
    np.testing.assert_allclose(net.conv1.ver_bn.gamma.asnumpy(), 1 / 3, rtol=1e-6)


def test_unknown_model_and_block_type_are_clear_errors():
    with pytest.raises(ValueError, match="unknown model 'resnet19'.*did you mean resnet18"):
        create_model("resnet19")
    with pytest.raises(ValueError, match="block_type must be one of base, acb"):
        create_model("sres18", block_type="ACB")
    assert set(IMAGENET + ["src56", "src110", "resnet18", "mobilenet_v2_100", "vit_b_16_224"]) <= set(list_models())



def test_mindcv_weights_give_identical_logits_in_our_base_model():
    import mindcv
    from mindspore import load_param_into_net

    theirs = mindcv.create_model("resnet18", num_classes=5)
    ours = create_model("sres18", num_classes=5)
    not_loaded, unused = load_param_into_net(ours, {p.name: p for p in theirs.get_parameters()}, strict_load=True)
    assert not_loaded == [] and unused == []
    theirs.set_train(False)
    ours.set_train(False)
    x = Tensor(np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32))
    assert_close(ours(x).asnumpy(), theirs(x).asnumpy(), 1e-6)
