"""What every kind's Cell shares: a conv's parameters without its computation, the kernel-size check."""
from mindspore import Parameter, nn


def check_kernel_size(kernel_size, what="kernel_size"):
    """ACBs need a square, odd kernel of at least 3 so that a centre row/column exists."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 3 \
            or kernel_size % 2 == 0:
        raise ValueError(f"{what} must be an odd integer >= 3 for an ACB, got {kernel_size!r}")


class Kernel(nn.Cell):
    """A conv's parameters without its computation (``weight``, and ``bias`` if any).

    The one-conv form of an ACB sums its branches' kernels and convolves once:
    its branches hold parameters only.  Not being convolutions, mixed
    precision leaves them alone (MindCV's O1 would wrap a ``nn.Conv2d`` in a
    casting cell that has no ``weight``).
    """

    def __init__(self, out_channels, in_per_group, kernel, has_bias=False):
        super().__init__()
        from mindspore.common.initializer import HeUniform, Uniform, initializer

        fan_in = in_per_group * kernel[0] * kernel[1]
        self.weight = Parameter(initializer(HeUniform(negative_slope=5 ** 0.5),
                                            (out_channels, in_per_group) + tuple(kernel)), name="weight")
        self.has_bias = has_bias
        if has_bias:
            self.bias = Parameter(initializer(Uniform(1 / fan_in ** 0.5), (out_channels,)), name="bias")

    def construct(self, x):
        return x
