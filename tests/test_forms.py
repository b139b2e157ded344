"""Moving a checkpoint between its forms (acnet_ms.reparam.forms): training, stock and deploy, one call each,
checked against the networks themselves (random BN statistics and affine parameters): every form of one set of
weights computes the same logits."""
import numpy as np
import pytest

from acnet_ms import create_model
from acnet_ms.models import checkpoint_forms
from acnet_ms.reparam.forms import DEPLOY, FORMS, STOCK, TRAINING, Forms
from acnet_ms.reparam.transform import block_layout, network_forms

from acnet_ms.reparam.switch import reparam_blocks

from helpers import arrays_of, images, load_strict, randomize_bn, randomize_block

KINDS = ["acb", "dbb", "orepa", "rep"]


def logits(net, x):
    net.set_train(False)
    return net(x).asnumpy()


@pytest.fixture(scope="module")
def deploy_forms():
    return checkpoint_forms("src20", 10, state={}, deploy=True)


@pytest.mark.parametrize("kind", KINDS)
def test_every_form_of_one_checkpoint_computes_the_same(kind, deploy_forms):
    net = randomize_bn(create_model("src20", num_classes=10, block_type=kind), seed=2)
    for i, (_, block) in enumerate(reparam_blocks(net)):
        randomize_block(block, seed=10 + i, damp=True)
    trained = arrays_of(net)
    x = images(0, size=32)
    want = logits(net, x)
    scale = np.abs(want).max()
    forms = Forms(block_layout(net), deploy_forms.native, deploy_forms.pairs)

    stock = forms.move(trained, STOCK)
    assert sorted(stock.blocks) == sorted(block_layout(net)) and not stock.bns
    got = logits(load_strict(create_model("src20", num_classes=10), stock.state), x)
    assert np.abs(got - want).max() <= 1e-5 * scale

    deploy = forms.move(trained, DEPLOY)
    assert deploy.bns and sorted(deploy.blocks) == sorted(stock.blocks)
    folded = logits(load_strict(create_model("src20", num_classes=10, deploy=True), deploy.state), x)
    assert np.abs(folded - want).max() <= 1e-5 * scale
    # from stock, the deploy move is the same arrays: moves compose
    again = forms.move(stock.state, DEPLOY)
    assert set(again.state) == set(deploy.state)
    for name, value in deploy.state.items():
        np.testing.assert_allclose(again.state[name], value, rtol=0, atol=1e-6 * max(1.0, np.abs(value).max()))

    # a plain checkpoint into the training form computes the plain function, and its blocks load strictly
    blocks = Forms(block_layout(net)).move(stock.state, TRAINING)
    assert sorted(blocks.blocks) == sorted(block_layout(net))
    fresh = create_model("src20", num_classes=10, block_type=kind)
    mine = dict(arrays_of(fresh), **blocks.state)
    assert np.abs(logits(load_strict(fresh, mine), x) - want).max() <= 1e-5 * scale


def test_a_networks_forms_say_what_form_it_is():
    assert network_forms(create_model("src20", num_classes=10, block_type="acb"))[1] == TRAINING
    assert network_forms(create_model("src20", num_classes=10))[1] == STOCK
    forms, form = network_forms(create_model("src20", num_classes=10, deploy=True))
    assert form == DEPLOY and forms.pairs and not forms.blocks


def test_moves_drop_trainer_entries_and_refuse_what_they_cannot():
    net = create_model("src20", num_classes=10, block_type="acb")
    trained = arrays_of(net)
    trained.update({"moments." + k: v for k, v in list(trained.items())[:3]}, learning_rate=np.float32(0.1))
    moved = Forms(block_layout(net)).move(trained, STOCK)
    assert not [k for k in moved.state if k.startswith("moments.") or k == "learning_rate"]
    with pytest.raises(ValueError, match="is not part of this model"):
        Forms().move(trained, STOCK)
    with pytest.raises(ValueError, match="form is one of training, stock, deploy, got 'plain'"):
        Forms().move(trained, "plain")
    assert FORMS == (TRAINING, STOCK, DEPLOY)
