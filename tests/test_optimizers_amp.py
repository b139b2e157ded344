"""Off the tested path: every optimizer MindCV builds, and an auxiliary head at mixed precision (every kind
at every AMP level: tests/test_kind_contract.py).

A training checkpoint holds the optimizer's slots beside the network (``moments.*``,
``stat.*``, ``mean_square.*``, ``lion_m.*``, ...): converting, finetuning and
validating must take the network's entries only, whichever optimizer wrote it.
"""
import re

import numpy as np
import pytest
from helpers import SiteNet, assert_close, randomize_bn, slow_except

import mindspore as ms
from mindspore import Tensor, nn

from acnet_ms import create_model
from acnet_ms.engine.loading import load_pretrained
from acnet_ms.io.checkpoint import read_checkpoint, write_checkpoint
from acnet_ms.cli import UserError
from acnet_ms.config.loader import defaults
from acnet_ms.convert.pipeline import convert_checkpoint
from acnet_ms.models import num_classes_of
from acnet_ms.reparam.state import network_entries
from acnet_ms.training.factories import build_train_step
from acnet_ms.training.loop import train_call
from acnet_ms.reparam.transform import acb_layout, to_blocks, trace

#: every name mindcv 0.3.0's create_optimizer accepts (test_the_optimizer_list_is_mindcvs checks it)
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "lion", "nadam", "adan", "rmsprop", "adagrad", "lamb")
#: optimizers MindSpore 2.8 has no CPU kernel for
NO_CPU_KERNEL = {"lamb"}


def test_the_optimizer_list_is_mindcvs():
    import inspect

    from mindcv.optim import optim_factory

    source = inspect.getsource(optim_factory.create_optimizer)
    accepted = set(re.findall(r'opt == "(\w+)"', source))
    for group in re.findall(r"opt in \[([^\]]*)\]", source):
        accepted.update(re.findall(r'"(\w+)"', group))
    assert accepted == set(OPTIMIZERS)
    from acnet_ms.config.options import OPTIONS

    assert set(OPTIONS["opt"].choices) == accepted  # every name MindCV takes is an option value


def batch(seed=0, size=16, n=2):
    rng = np.random.default_rng(seed)
    return (Tensor(rng.normal(size=(n, 3, size, size)).astype(np.float32)),
            Tensor(rng.integers(0, 10, n).astype(np.int32)))


def train_one_step(net, opt="momentum", amp_level="O0", model="src20"):
    cfg = dict(defaults(), device_target="CPU", model=model, block_type="acb", opt=opt, amp_level=amp_level,
               weight_decay=1e-4, lr=0.05)
    step, _ = build_train_step(net, cfg, [0.05] * 4)
    loss = train_call(step, *batch(), True, cfg)[0]
    return step, float(loss.asnumpy())


@pytest.mark.parametrize("opt", slow_except(OPTIMIZERS, "momentum", "lamb"))
def test_a_checkpoint_of_every_optimizer_converts_finetunes_and_validates(opt, tmp_path):
    ms.set_seed(0)
    net = randomize_bn(create_model("src20", num_classes=10, block_type="acb"), seed=1)
    if opt in NO_CPU_KERNEL:
        with pytest.raises(UserError) as err:
            train_one_step(net, opt)
        assert re.fullmatch(rf"the train step of src20 .* opt {opt}, (graph|PyNative) mode\) does not compile or run on CPU: "
                            rf"Unsupported op \[\w+\] on CPU", str(err.value)), str(err.value)
        return
    step, loss = train_one_step(net, opt)
    assert np.isfinite(loss)
    src, dst = str(tmp_path / "train.ckpt"), str(tmp_path / "plain.ckpt")
    meta = dict(model="src20", block_type="acb", num_classes=10, epoch=1, step=1, acb_layout=acb_layout(net))
    write_checkpoint(src, step, meta)
    arrays, _ = read_checkpoint(src)
    network = {p.name for p in net.get_parameters()}
    slots = [k for k in arrays if k not in network]
    assert any(k.endswith(".square_conv.weight") for k in slots)  # the optimizer keeps slots of the ACBs
    assert set(network_entries(arrays)) == network  # told apart by the checkpoint alone

    summary = convert_checkpoint(src, dst, log=lambda *_: None)
    assert summary["acbs"] == len(meta["acb_layout"])
    plain = create_model("src20", num_classes=10)
    folded, _ = read_checkpoint(dst)
    assert list(folded) == [p.name for p in plain.get_parameters()]
    ms.load_param_into_net(plain, {k: ms.Parameter(Tensor(v), name=k) for k, v in folded.items()},
                           strict_load=True)
    x, _ = batch(seed=3)
    net.set_train(False)
    plain.set_train(False)
    assert_close(plain(x).asnumpy(), net(x).asnumpy(), 1e-4, opt)

    finetuned = create_model("src20", num_classes=10)  # finetuning a plain model from the training checkpoint
    loaded = load_pretrained(finetuned, src, log=lambda *_: None)
    assert len(loaded) == len(list(finetuned.get_parameters()))
    finetuned.set_train(False)
    assert_close(finetuned(x).asnumpy(), net(x).asnumpy(), 1e-4, opt + " finetune start")
    assert num_classes_of("src20", network_entries(arrays)) == 10


def ThreeKinds():
    """One conv of each ACB kind (helpers.SiteNet without the pointwise conv): into a BN slot, with its own
    bias, and with neither (pre-activation)."""
    return SiteNet(pointwise=False)


def three_kinds(branch_bn=True):
    ms.set_seed(0)
    net = ThreeKinds()
    return to_blocks(net, trace(net, (1, 3, 16, 16)), "acb", dict(branch_bn=branch_bn))


def test_the_model_has_one_acb_of_each_kind():
    layout = acb_layout(three_kinds())
    assert {k: v["slot"] for k, v in layout.items()} == dict(conv_bn="bn", conv_bias="bias", conv_plain="none")
    assert [v["branch_bn"] for v in layout.values()] == [True, True, False]  # a bias goes into a BN slot


def test_trainer_entries_are_copies_under_a_prefix_or_scalars_and_the_model_decides_when_given():
    from acnet_ms.reparam.state import trainer_entries

    w, b = np.zeros((4, 3, 3, 3)), np.zeros(4)
    state = {"conv.weight": w, "conv.bias": b, "0.weight": w, "1.0.weight": w,  # SequentialCell indices: network
             "head.conv.weight": np.zeros((2, 2)),  # same name tail, another shape: network
             "stat.conv.weight": w, "mean_square.conv.bias": b, "lion_m.conv.weight": w, "ema.conv.bias": b,
             "global_step": np.zeros(1), "mu_schedule": np.zeros(1), "learning_rate": np.zeros(1)}
    assert trainer_entries(state) == {"stat.conv.weight", "mean_square.conv.bias", "lion_m.conv.weight",
                                      "ema.conv.bias", "global_step", "mu_schedule", "learning_rate"}
    network = ["conv.weight", "conv.bias", "0.weight", "1.0.weight", "head.conv.weight", "mu_schedule"]
    assert trainer_entries(state, network) == set(state) - set(network)


class TwoHeads(nn.Cell):
    """A network with an auxiliary head in training (as Inception v3): it returns (logits, aux logits)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.head, self.aux = nn.Dense(8, 10), nn.Dense(8, 10)

    def construct(self, x):
        x = self.conv(x).mean(axis=(2, 3))
        if self.training:
            return self.head(x), self.aux(x)
        return self.head(x)


@pytest.mark.parametrize("amp_level", ["O0", "O2"])
def test_a_network_with_an_auxiliary_head_trains_with_mindcvs_aux_loss(amp_level):
    ms.set_seed(0)
    net = TwoHeads()
    cfg = dict(defaults(), device_target="CPU", model="twoheads", block_type="base", opt="momentum",
               amp_level=amp_level, aux_factor=0.4)
    step, _ = build_train_step(net, cfg, [0.0] * 4)  # lr 0: the loss is the initial weights'
    x, y = batch()
    loss = float(train_call(step, x, y, True, cfg)[0].asnumpy())
    main, aux = (l.asnumpy().astype(np.float64) for l in net(x))

    def ce(z):
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(z)), y.asnumpy()]))

    assert loss == pytest.approx(ce(main) + 0.4 * ce(aux), rel=2e-3 if amp_level == "O2" else 1e-5)
