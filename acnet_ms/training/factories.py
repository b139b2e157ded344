"""The pieces a run is built from: the learning-rate schedule, loss scaling, optimizer, loss and train step."""
from ..cli import UserError, first_line
from ..engine.runtime import apply_amp


def lr_schedule(cfg, steps_per_epoch, log=None):
    """Per-step learning rates (a list, one per training step) from mindcv's scheduler factory."""
    import logging

    from mindcv.scheduler import create_scheduler

    if cfg["warmup_epochs"] + cfg["decay_epochs"] > cfg["epoch_size"] and log:
        log(f"warmup_epochs + decay_epochs ({cfg['warmup_epochs']} + {cfg['decay_epochs']}) > epoch_size "
            f"({cfg['epoch_size']}): the schedule ends before reaching min_lr (as in MindCV)")
    logging.getLogger("mindcv.scheduler.scheduler_factory").setLevel(logging.ERROR)  # said once, above
    try:
        lrs = create_scheduler(steps_per_epoch, scheduler=cfg["scheduler"], lr=cfg["lr"], min_lr=cfg["min_lr"],
                               warmup_epochs=cfg["warmup_epochs"], warmup_factor=cfg["warmup_factor"],
                               decay_epochs=cfg["decay_epochs"], decay_rate=cfg["decay_rate"],
                               milestones=cfg["multi_step_decay_milestones"], num_epochs=cfg["epoch_size"],
                               num_cycles=cfg["num_cycles"], cycle_decay=cfg["cycle_decay"],
                               lr_epoch_stair=cfg["lr_epoch_stair"])
    except (ValueError, TypeError, AssertionError, ZeroDivisionError) as err:
        raise UserError(f"scheduler {cfg['scheduler']}: mindcv refuses the schedule options ({first_line(err)})") \
            from None
    return [float(v) for v in lrs]


def loss_scaling(cfg):
    """(initial scale, dynamic?, skips overflowing steps?) for ``loss_scale_type`` fixed / dynamic / auto.

    ``auto`` does what MindSpore's ``build_train_network`` does by level:
    dynamic scaling from 2**24 for O2, no scaling otherwise.
    """
    kind = cfg["loss_scale_type"]
    if kind == "auto":
        if cfg["amp_level"] == "O2":
            return 2.0 ** 24, True, True
        return 1.0, False, cfg["drop_overflow_update"]
    if kind == "dynamic":
        return cfg["loss_scale"], True, True  # MindCV: dynamic scaling always drops overflowing updates
    return cfg["loss_scale"], False, cfg["drop_overflow_update"]


def build_train_step(net, cfg, lrs, scale_window=2000, repopt=None):
    """The compiled train step: loss, optimizer, AMP, loss scaling, clipping, accumulation, EMA, reduction;
    with ``repopt`` (``{weight name: Scales}``), RepOpt's gradient multipliers before the optimizer.

    Returns ``(step, optimizer)``.  ``step(image, label)`` returns ``(loss,
    finite, scale)``; see :class:`acnet_ms.training.train_step.TrainStep`.
    """
    from mindcv.loss import create_loss
    from mindcv.optim import create_optimizer

    from .train_step import TrainStep

    apply_amp(net, cfg["amp_level"], cfg["amp_cast_list"])
    try:
        optimizer = create_optimizer(net, opt=cfg["opt"], lr=lrs, weight_decay=cfg["weight_decay"],
                                     momentum=cfg["momentum"], nesterov=cfg["use_nesterov"],
                                     weight_decay_filter=cfg["weight_decay_filter"], layer_decay=cfg["layer_decay"],
                                     eps=cfg["eps"], loss_scale=1.0)
        loss = create_loss(name=cfg["loss"], reduction=cfg["reduction"], label_smoothing=cfg["label_smoothing"],
                           aux_factor=cfg["aux_factor"])
    except (ValueError, TypeError, NotImplementedError, AssertionError) as err:
        raise UserError(f"optimizer/loss options refused by mindcv ({first_line(err)})") from None
    transform = None
    if repopt is not None:
        from .repopt import RepOptGradients, weight_decays

        try:
            transform = RepOptGradients(optimizer.parameters, repopt, weight_decays(optimizer))
        except ValueError as err:
            raise UserError(f"repopt_scales {cfg['repopt_scales']}: {err}") from None
    scale, dynamic, skip = loss_scaling(cfg)
    step = TrainStep(net, loss, optimizer, scale=scale, dynamic=dynamic, skip_overflow=skip,
                     scale_window=scale_window, clip_grad=cfg["clip_grad"], clip_value=cfg["clip_value"],
                     accumulation=cfg["gradient_accumulation_steps"], ema=cfg["ema"], ema_decay=cfg["ema_decay"],
                     grad_transform=transform)
    step.set_train()
    return step, optimizer
