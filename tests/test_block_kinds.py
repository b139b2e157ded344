"""A block kind defined here, in this file alone, goes the whole way through the toolkit.

The kind ("twin"): a k x k conv + BN trained as two parallel k x k conv + BN
branches of the same geometry; their sum folds into one conv.  It is
registered on import, so the command-line scripts find it through
``ACNET_MS_KINDS=test_block_kinds`` (this folder on ``PYTHONPATH``).
"""
import os
import subprocess
import sys

import mindcv
import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn

from acnet_ms.kinds import identities
from acnet_ms.kinds import BlockKind, KindOption, get_kind, register_kind

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _geometry(conv):
    return dict(in_channels=conv.in_channels, out_channels=conv.out_channels, kernel_size=tuple(conv.kernel_size),
                stride=tuple(conv.stride[-2:]), pad_mode=conv.pad_mode, padding=conv.padding,
                dilation=tuple(conv.dilation[-2:]), group=conv.group)


class TwinBlock(nn.Cell):
    """``main_bn(main_conv(x)) + twin_bn(twin_conv(x))``; after ``switch_to_deploy`` one conv ``fused``."""

    def __init__(self, conv, bn, twin_scale=1.0, seed=0):
        super().__init__()
        self.eps = float(bn.eps)
        self.deploy = False
        self.geometry = _geometry(conv)
        self.main_conv, self.twin_conv = nn.Conv2d(**self.geometry), nn.Conv2d(**self.geometry)
        self.main_conv.weight.set_data(Tensor(conv.weight.asnumpy()))
        w = conv.weight.asnumpy()
        rng = np.random.default_rng(seed)
        self.twin_conv.weight.set_data(Tensor(rng.normal(0, w.std() or 1e-2, w.shape).astype(w.dtype)))
        self.main_bn = nn.BatchNorm2d(conv.out_channels, eps=bn.eps, momentum=bn.momentum)
        self.twin_bn = nn.BatchNorm2d(conv.out_channels, eps=bn.eps, momentum=bn.momentum, gamma_init=twin_scale)
        for field in ("gamma", "beta"):
            getattr(self.main_bn, field).set_data(Tensor(getattr(bn, field).asnumpy()))

    def construct(self, x):
        if self.deploy:
            return self.fused(x)
        return self.main_bn(self.main_conv(x)) + self.twin_bn(self.twin_conv(x))

    def reparam_info(self):
        return dict(kind="twin", eps=self.eps)

    def switch_to_deploy(self):
        state = {local: param.asnumpy() for local, param in self.parameters_and_names()}
        kernel, bias, _ = get_kind("twin").fold(state, "", dict(eps=self.eps), sep="")
        self.fused = nn.Conv2d(**self.geometry, has_bias=True)
        self.fused.weight = Parameter(Tensor(kernel), name="fused.weight")
        self.fused.bias = Parameter(Tensor(bias), name="fused.bias")
        for name in ("main_conv", "main_bn", "twin_conv", "twin_bn"):
            delattr(self, name)
        self.deploy = True


class TwinKind(BlockKind):
    name = "twin"
    label = "twin block"
    marker = ".twin_conv.weight"
    options = {"twin_scale": KindOption(1.0, "initial gamma of the twin branch's BN", None, float)}
    slot_words = {"bn": "BN slot"}

    def eligible(self, site, options):
        kh, kw = site.kernel
        if (kh, kw) == (1, 1):
            return False
        return True if site.bn else "no BatchNorm after it"

    def slot(self, site, options):
        return "bn"

    def build(self, conv, bn, slot, options, seed):
        return TwinBlock(conv, bn, options["twin_scale"], seed)

    @staticmethod
    def _names(prefix, sep="."):
        return {b: [f"{prefix}{sep}{b}_conv.weight"] + [f"{prefix}{sep}{b}_bn.{f}" for f in identities.BN_FIELDS]
                for b in ("main", "twin")}

    def entries(self, prefix, info):
        return [n for names in self._names(prefix).values() for n in names]

    def fold(self, state, prefix, info, sep="."):
        pairs = [identities.fuse_bn(*(state[n] for n in names), eps=info.get("eps", identities.BN_EPS))
                 for names in self._names(prefix, sep).values()]
        kernel, bias = identities.sum_branches(pairs)
        dtype = np.asarray(state[f"{prefix}{sep}main_conv.weight"]).dtype
        return kernel.astype(dtype), bias.astype(dtype), [n for ns in self._names(prefix, sep).values() for n in ns]

    def from_plain(self, state, prefix, info):
        out = dict(state)
        if f"{prefix}.weight" not in out:
            return out
        weight = out.pop(f"{prefix}.weight")
        out[f"{prefix}.main_conv.weight"] = weight
        out[f"{prefix}.twin_conv.weight"] = np.zeros_like(weight)
        for f in identities.BN_FIELDS:
            out[f"{prefix}.main_bn.{f}"] = out.pop(f"{info['bn']}.{f}")
        n = weight.shape[0]
        out.update({f"{prefix}.twin_bn.gamma": np.zeros(n, weight.dtype), f"{prefix}.twin_bn.beta":
                    np.zeros(n, weight.dtype), f"{prefix}.twin_bn.moving_mean": np.zeros(n, weight.dtype),
                    f"{prefix}.twin_bn.moving_variance": np.ones(n, weight.dtype)})
        return out


register_kind(TwinKind())


def _eval_logits(net, x):
    net.set_train(False)
    return net(Tensor(x)).asnumpy()


def test_the_kind_builds_any_model_and_folds_exactly(tmp_path):
    """create_model takes the kind by name; its blocks fold (numpy side) to the stock model's function."""
    from acnet_ms import create_model, summary_line
    from acnet_ms.reparam.state import fold_state
    from acnet_ms.reparam.transform import block_layout
    from conftest import assert_close, randomize_bn

    ms.set_context(mode=ms.PYNATIVE_MODE)
    net = create_model("resnet18", num_classes=10, block_type="twin", block_options={"twin_scale": 0.5})
    assert "17 k x k convs became twin blocks (17 BN slot)" in summary_line(net)
    assert net.acnet.block_options == {"twin_scale": 0.5}
    assert float(net.conv1.twin_bn.gamma.asnumpy()[0]) == 0.5
    randomize_bn(net, seed=1)
    with pytest.raises(ValueError, match="has no option 'scale'"):
        create_model("resnet18", block_type="twin", block_options={"scale": 2})
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    expected = _eval_logits(net, x)
    plain, blocks = fold_state({p.name: p.asnumpy() for p in net.get_parameters()}, block_layout(net))
    assert len(blocks) == 17
    stock = mindcv.create_model("resnet18", num_classes=10)
    assert ms.load_param_into_net(stock, {k: Parameter(Tensor(v), name=k) for k, v in plain.items()},
                                  strict_load=True) == ([], [])
    assert_close(_eval_logits(stock, x), expected, 1e-4, "folded twin model")


def _kind_env():
    env = dict(os.environ)
    env.pop("GLOG_v", None)
    env["ACNET_MS_KINDS"] = "test_block_kinds"
    env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _script(name, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, name), *map(str, args)], cwd=ROOT, env=_kind_env(),
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_a_kind_of_ones_own_trains_converts_and_loads_into_stock_mindcv(digits, tmp_path):
    """train.py -> checkpoint -> convert.py -> strict load into stock MindCV, logits equal; no library file
    knows the kind: ACNET_MS_KINDS names this module."""
    from acnet_ms import create_model
    from acnet_ms.io.checkpoint import read_checkpoint
    from conftest import assert_close, small_run

    save = str(tmp_path / "run")
    res = _script("train.py", *small_run(digits, save, "--model", "resnet18", "--block_type", "twin",
                                         "--block_options", "{twin_scale: 0.5}", "--image_resize", 32,
                                         "--epoch_size", 1, "--batch_size", 16, "--mode", 1))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resnet18: 17 k x k convs became twin blocks" in res.stdout
    trained = os.path.join(save, "resnet18_twin-best.ckpt")
    arrays, meta = read_checkpoint(trained)
    assert meta["block_type"] == "twin" and meta["block_options"] == {"twin_scale": 0.5}
    plain = str(tmp_path / "plain.ckpt")
    res = _script("convert.py", "--ckpt_path", trained, "--output", plain)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "folded 17 twin blocks" in res.stdout

    ms.set_context(mode=ms.PYNATIVE_MODE)
    net = create_model("resnet18", num_classes=10, block_type="twin")
    assert ms.load_param_into_net(net, {p.name: Parameter(Tensor(arrays[p.name]), name=p.name)
                                        for p in net.get_parameters()}, strict_load=True) == ([], [])
    folded, _ = read_checkpoint(plain)
    stock = mindcv.create_model("resnet18", num_classes=10)
    assert ms.load_param_into_net(stock, {k: Parameter(Tensor(v), name=k) for k, v in folded.items()},
                                  strict_load=True) == ([], [])
    x = np.random.default_rng(1).normal(size=(2, 3, 32, 32)).astype(np.float32)
    assert_close(_eval_logits(stock, x), _eval_logits(net, x), 1e-4, "converted twin checkpoint")


def test_a_kind_module_that_does_not_import_is_one_line(digits, tmp_path):
    from conftest import small_run

    env = dict(_kind_env(), ACNET_MS_KINDS="no_such_kind_module")
    res = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"),
                          *map(str, small_run(digits, str(tmp_path / "run"), "--block_type", "twin"))],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "ACNET_MS_KINDS: cannot import block-kind module 'no_such_kind_module'" in lines[0]
    assert not os.path.exists(tmp_path / "run")
