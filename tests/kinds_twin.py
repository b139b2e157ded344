"""A block kind defined outside the package ("twin"), for the tests: the kind contract suite
(tests/test_kind_contract.py) runs on it as on the kinds the package ships, and the command-line scripts find
it through ``ACNET_MS_KINDS=kinds_twin`` (this folder on ``PYTHONPATH``).

The kind: a k x k conv + BN trained as two parallel k x k conv + BN branches of the same geometry; their sum
folds into one conv.  It is registered on import.
"""
import numpy as np
from mindspore import Parameter, Tensor, nn

from acnet_ms.kinds import identities
from acnet_ms.kinds import BlockKind, KindOption, get_kind, register_kind
from acnet_ms.kinds.geometry import ConvGeometry


class TwinBlock(nn.Cell):
    """``main_bn(main_conv(x)) + twin_bn(twin_conv(x))``; after ``switch_to_deploy`` one conv ``fused``."""

    def __init__(self, conv, bn, twin_scale=1.0, seed=0):
        super().__init__()
        self.eps = float(bn.eps)
        self.deploy = False
        self.geometry = ConvGeometry.of(conv).replace(has_bias=False)
        self.main_conv, self.twin_conv = self.geometry.conv(), self.geometry.conv()
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
        self.fused = self.geometry.conv(has_bias=True)
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
