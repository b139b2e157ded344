"""One compiled training step with loss scaling that works on every backend.

Loss scaling uses MindSpore's functional API (``mindspore.amp.DynamicLossScaler``
and ``mindspore.amp.all_finite`` inside the compiled step), which runs on CPU
too; the legacy ``TrainOneStepWithLossScaleCell`` cannot check overflow there.
The step also does what MindCV's ``TrainStep`` does: gradient clipping by
global norm, gradient accumulation, and an exponential moving average (EMA)
of the weights.
"""
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.ops import functional as F

_unscale = ops.MultitypeFuncGraph("unscale")
_accumulate = ops.MultitypeFuncGraph("accumulate")
_ema_update = ops.MultitypeFuncGraph("ema_update")


@_unscale.register("Tensor", "Tensor")
def _unscale_tensor(scale, grad):
    return grad / F.cast(scale, F.dtype(grad))


@_accumulate.register("Tensor", "Tensor", "Tensor")
def _accumulate_tensor(inv_steps, total, grad):
    return F.assign_add(total, F.cast(grad, F.dtype(total)) * inv_steps)


@_ema_update.register("Tensor", "Tensor", "Tensor")
def _ema_update_tensor(decay, average, weight):
    return F.assign(average, average * decay + F.cast(weight, F.dtype(average)) * (1 - decay))


class _WithLoss(nn.Cell):
    """Network + loss, with logits and (soft) labels in float32 whatever the AMP level.

    A network with auxiliary heads (Inception v3 in training) returns a tuple
    of logits; each is cast, and the loss (MindCV's, with ``aux_factor``) takes the tuple.
    """

    def __init__(self, network, loss_fn):
        super().__init__(auto_prefix=False)
        self.network, self.loss_fn = network, loss_fn

    def construct(self, image, label):
        logits = self.network(image)
        if F.dtype(label) == ms.float16:
            label = F.cast(label, ms.float32)
        if isinstance(logits, tuple):
            return self.loss_fn(self.to_float32(logits), label)
        return self.loss_fn(F.cast(logits, ms.float32), label)

    @staticmethod
    def to_float32(logits):
        return tuple([F.cast(x, ms.float32) for x in logits])


class TrainStep(nn.Cell):
    """``step(image, label) -> (loss, finite, scale)``.

    * Loss scaling: the loss is multiplied by ``scale`` before the backward
      pass and the gradients divided by it after, so the update is that of an
      unscaled step.  ``dynamic``: the scale is multiplied by 2 after
      ``scale_window`` finite steps in a row and halved (not below 1) after a
      non-finite one.  ``skip_overflow``: a step whose gradients are not all
      finite changes no weight (dynamic scaling always skips, as in MindCV).
    * ``clip_grad``: gradients (averaged over ranks and accumulated batches)
      are clipped to global norm ``clip_value``.
    * ``accumulation`` k > 1: gradients of k batches are averaged and applied
      in one update on every k-th call; the schedule advances every call (as
      in MindCV), so the learning rate of step n is the one applied.
    * ``ema``: after each update, ``ema.<name>`` (every network parameter,
      BN statistics included) moves towards the weights with MindCV's decay
      ``ema_decay * (1 - exp(-updates / 2000))``.
    * ``grad_transform``: a Cell the gradients go through last, just before
      the optimizer (RepOpt's :class:`acnet_ms.training.repopt.RepOptGradients`).
    """

    def __init__(self, network, loss_fn, optimizer, scale=1.0, dynamic=False, skip_overflow=False,
                 scale_window=2000, clip_grad=False, clip_value=15.0, accumulation=1, ema=False, ema_decay=0.9999,
                 grad_transform=None):
        super().__init__(auto_prefix=False)
        self.network = _WithLoss(network, loss_fn)
        self.optimizer = optimizer
        self.grad_transform = grad_transform
        self.transforms = grad_transform is not None
        self.weights = optimizer.parameters
        self.grad = ops.GradOperation(get_by_list=True, sens_param=True)
        self.hyper_map = ops.HyperMap()
        self.dynamic, self.skip_overflow = dynamic, skip_overflow
        self.checks_overflow = dynamic or skip_overflow
        self.scaler = ms.amp.DynamicLossScaler(float(scale), 2, scale_window)
        self.clip_grad, self.clip_value = clip_grad, float(clip_value)
        self.reducer = F.identity
        parallel = ms.get_auto_parallel_context("parallel_mode")
        if parallel in (ms.ParallelMode.DATA_PARALLEL, ms.ParallelMode.HYBRID_PARALLEL):
            degree = ms.get_auto_parallel_context("device_num")
            self.reducer = nn.DistributedGradReducer(self.weights, True, degree)
        self.accumulation = int(accumulation)
        if self.accumulation > 1:
            self.accumulated = self.weights.clone(prefix="accum", init="zeros")
            self.micro_step = Parameter(Tensor(0, ms.int32), name="accum.micro_step")
            self.inv_steps = Tensor(1.0 / self.accumulation, ms.float32)
        self.ema = ema
        if ema:
            self.online = ms.ParameterTuple(list(network.get_parameters()))
            self.averaged = self.online.clone(prefix="ema", init="same")
            self.ema_decay = float(ema_decay)
            self.updates = Parameter(Tensor(0.0, ms.float32), name="ema.updates")

    def _apply(self, loss, grads):
        """Reduce, check, clip and apply ``grads`` (already unscaled); update the EMA."""
        grads = self.reducer(grads)
        finite = ms.amp.all_finite(grads) if self.checks_overflow else Tensor(True, ms.bool_)
        if self.dynamic:
            self.scaler.adjust(finite)
        if self.clip_grad:
            grads = ops.clip_by_global_norm(grads, self.clip_value)
        if self.skip_overflow:
            if finite:
                loss = self._update(loss, grads)
        else:
            loss = self._update(loss, grads)
        return loss, finite

    def _update(self, loss, grads):
        if self.transforms:
            grads = self.grad_transform(grads)
        loss = F.depend(loss, self.optimizer(grads))
        if self.ema:
            self.updates += 1
            decay = self.ema_decay * (1 - F.exp(-self.updates / 2000))
            loss = F.depend(loss, self.hyper_map(F.partial(_ema_update, decay), self.averaged, self.online))
        return loss

    def construct(self, image, label):
        loss = self.network(image, label)
        scale = self.scaler.scale_value
        sens = ops.ones_like(loss) * F.cast(scale, F.dtype(loss))
        grads = self.grad(self.network, self.weights)(image, label, sens)
        grads = self.hyper_map(F.partial(_unscale, scale), grads)
        if self.accumulation > 1:
            loss = F.depend(loss, self.hyper_map(F.partial(_accumulate, self.inv_steps), self.accumulated, grads))
            F.assign_add(self.micro_step, ops.ones_like(self.micro_step))
            finite = Tensor(True, ms.bool_)
            if self.micro_step >= self.accumulation:
                loss, finite = self._apply(loss, self.accumulated)
                loss = F.depend(loss, self.hyper_map(F.partial(F.assign), self.accumulated,
                                                     self.hyper_map(F.zeros_like, self.accumulated)))
                F.assign(self.micro_step, ops.zeros_like(self.micro_step))
            else:
                loss = F.depend(loss, self.optimizer.get_lr())  # the schedule advances every call
            return loss, finite, scale
        loss, finite = self._apply(loss, grads)
        return loss, finite, scale

    # ------------------------------------------------------------------ outside the graph

    def scaler_state(self):
        """The loss scale and its counter, for checkpoint metadata."""
        return dict(loss_scale_value=float(self.scaler.scale_value.asnumpy()),
                    loss_scale_counter=int(self.scaler.counter.asnumpy()))

    def load_scaler_state(self, meta):
        if "loss_scale_value" in meta:
            self.scaler.scale_value.set_data(Tensor(float(meta["loss_scale_value"]), ms.float32))
            self.scaler.counter.set_data(Tensor(int(meta.get("loss_scale_counter", 0)), ms.int32))

    def swap_ema(self):
        """Exchange the online weights and their EMA (call twice to undo); no-op without EMA."""
        if not self.ema:
            return
        for online, averaged in zip(self.online, self.averaged):
            value = online.asnumpy().copy()
            online.set_data(Tensor(averaged.asnumpy().astype(value.dtype)))
            averaged.set_data(Tensor(value.astype(averaged.asnumpy().dtype)))
