"""AlternatingSteps: the Lightning side of training two networks in turn, so that GANModule holds only the algorithm.

What it gives a subclass (which sets `generator`, `discriminator` and says which parameters each
optimizer takes in `parameters_of`):
- `training_only(name)`: only network `name`'s parameters take gradients inside;
- `update(optimizer, loss)`: zero_grad, backward (a plain `loss.backward()` where no hook listens), step;
- `log_scalar(name, value)` / `publish_scalars()`: training scalars on logging steps only, one device
  read per logging step;
- optimizers from config factories (fused kernels where torch has them), schedules that follow a
  resumed run's own settings, gradient clipping and norms, `model.compile`, `channels_last`;
- the training noise stream, per rank, seeded from (seed, rank) and saved in every checkpoint.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch import Tensor, nn
from torch.nn.utils import clip_grad_norm_, get_total_norm
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from gankit import lightning_compat as compat
from gankit.randomness import seed_training_stream, set_training_stream_state, training_stream_state

log = logging.getLogger(__name__)
compat.skip_failing_nvml_check()

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
SchedulerFactory = Callable[[Optimizer], LRScheduler]
NAMES = ("g", "d")  # the two networks, in the order of configure_optimizers


class AlternatingSteps(L.LightningModule):
    """Two networks, "g" and "d", each with its optimizer (and optional schedule), updated in turn by hand."""

    generator: nn.Module
    discriminator: nn.Module

    def __init__(
        self,
        optimizers: dict[str, OptimizerFactory],
        schedulers: dict[str, SchedulerFactory | None],
        clip_norm: dict[str, float | None],
        compile: bool | dict | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        for name, value in clip_norm.items():
            if value is not None and not value > 0:
                raise ValueError(
                    f"{name}_clip_norm must be a positive gradient norm, or null for no clipping; got {value}"
                )
        if compile not in (None, False) and not isinstance(compile, (bool, Mapping)):
            raise ValueError(f"model.compile takes true, false or torch.compile's options as a dict; got {compile!r}")
        self._factories = {name: (optimizers[name], schedulers.get(name)) for name in NAMES}
        self.clip_norm = clip_norm
        self.compile_options = None if compile in (None, False) else ({} if compile is True else dict(compile))
        self.channels_last = channels_last
        self._schedulers: dict[str, LRScheduler | None] = dict.fromkeys(NAMES)
        self._scheduler_settings: dict[str, dict] = {}
        self._restored_stream: dict | None = None
        self._logging = True  # this batch is a logging step (set in on_train_batch_start)
        self._scalars: dict[str, Tensor | float] = {}  # this logging step's training scalars
        self._prog_bar: dict[str, None] = {}  # the names among them shown in the progress bar, in order
        self._optimizer_g: Optimizer | None = None
        self._trainable: dict[str, list[nn.Parameter]] = {}  # each optimizer's trainable parameters (fit start)
        self._plain_backward = False  # loss.backward() is all manual_backward would do (decided at fit start)

    def parameters_of(self, name: str) -> list[nn.Parameter]:
        """The parameters optimizer `name` ("g" or "d") updates."""
        return list((self.generator if name == "g" else self.discriminator).parameters())

    # ---- set-up ------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """`model.compile`: torch.compile G and D in place (state_dict keys unchanged; an EMA copy stays eager).

        Each network gets one graph with gradients and one frozen (`training_only` flips
        requires_grad, a guard that recompiles once, not every step); G and D share the frame of
        nn.Module's call, so the recompile limit is raised to hold their graphs.
        `model.channels_last`: conv weights (and images, in the training step) in NHWC on CUDA.
        """
        if self.channels_last and self.device.type == "cuda":
            self.generator.to(memory_format=torch.channels_last)
            self.discriminator.to(memory_format=torch.channels_last)
        if self.compile_options is not None and not getattr(self, "_compiled", False):
            compat.allow_recompiles(16)
            self.generator.compile(**self.compile_options)
            self.discriminator.compile(**self.compile_options)
            self._compiled = True

    def setup(self, stage: str) -> None:
        """Each rank's training noise from (seed, rank): k DDP processes draw k different batches of fakes.

        Lightning seeds every process alike (`PL_GLOBAL_SEED`); the data order and the evaluation
        draw from that seed through their own generators, so only the training stream is re-seeded.
        """
        seed = os.environ.get("PL_GLOBAL_SEED")
        if stage == "fit" and seed is not None:
            seed_training_stream(int(seed), self.global_rank)

    def configure_optimizers(self):
        configs = []
        for name in NAMES:
            make_optimizer, make_scheduler = self._factories[name]
            optimizer = make_optimizer(self.parameters_of(name), **self._fused(make_optimizer))
            config = {"optimizer": optimizer}
            if make_scheduler is not None:
                scheduler = make_scheduler(optimizer)
                if getattr(scheduler, "total_iters", 0) is None:
                    raise ValueError(
                        f"model.{name}_scheduler runs over the run's length (total_iters: ${{g_steps}}), but g_steps "
                        "is null: set g_steps=N (generator steps) for this recipe"
                    )
                self._schedulers[name] = scheduler
                self._scheduler_settings[name] = compat.scheduler_settings(scheduler)
                config["lr_scheduler"] = scheduler
            configs.append(config)
        return configs  # order [G, D]: self.optimizers() returns them in this order

    def _fused(self, factory) -> dict:
        """A torch optimizer with a `fused` option (Adam, AdamW, SGD, Adagrad) as one fused kernel per
        parameter and step, on CUDA and on CPU, unless the config chooses `fused` or `foreach` itself. On
        CPU, fused Adam steps the 2D MLPs 2.8x faster than the default per-tensor loop. A resumed run keeps
        the setting its checkpoint was written with (torch restores it with the optimizer's state)."""
        target = getattr(factory, "func", factory)
        chosen = {"fused", "foreach"} & set(getattr(factory, "keywords", {}))
        settable = "fused" in inspect.signature(target).parameters and not chosen
        return {"fused": True} if self.device.type in ("cuda", "cpu") and settable else {}

    def on_train_start(self) -> None:
        """After a restore: the schedules of this run's config (e.g. a longer g_steps) at the restored
        step, and each rank's training stream where the checkpoint left it."""
        self._optimizer_g = self.optimizers()[0].optimizer  # to tell G's optimizer in on_before_optimizer_step
        for name, optimizer in zip(NAMES, self.trainer.optimizers, strict=True):
            self._trainable[name] = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
        self._plain_backward = self._unheard("on_before_backward", "on_after_backward", "backward")
        for name, scheduler in self._schedulers.items():
            if scheduler is not None and compat.scheduler_settings(scheduler) != self._scheduler_settings[name]:
                saved = compat.scheduler_settings(scheduler)
                log.info("model.%s_scheduler: this run's settings %s at step %d (the checkpoint had %s)",
                         name, self._scheduler_settings[name], scheduler.last_epoch, saved)  # fmt: skip
                scheduler.__dict__.update(self._scheduler_settings[name])
                compat.set_schedule_position(scheduler)  # the new schedule's value at the restored step
        if self._restored_stream is not None:
            states, world = self._restored_stream["states"], self.trainer.world_size
            if len(states) == world:
                set_training_stream_state(states[self.global_rank])
            else:
                log.warning(
                    "The checkpoint holds the training noise of %d processes, this run has %d: each rank's noise "
                    "is drawn afresh from (seed, rank), so this is not the same run.",
                    len(states),
                    world,
                )
            self._restored_stream = None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Every rank's training stream (called on all ranks: the states are gathered to the writer)."""
        state = training_stream_state()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            states = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(states, state)
        else:
            states = [state]
        checkpoint["training_stream"] = {"states": states}
        compat.keep_epoch_position(self.trainer, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._restored_stream = checkpoint.get("training_stream")  # applied in on_train_start

    # ---- one network's update ----------------------------------------------------------------
    @contextmanager
    def training_only(self, name: str) -> Iterator[None]:
        """Only network `name`'s parameters ("g" or "d") take gradients inside; the other's are frozen.

        What Lightning's `toggled_optimizer` does, from lists made once at fit start rather than a
        table of every parameter rebuilt twice per step. A parameter frozen before the fit, or by
        anyone during it, stays frozen.
        """
        frozen = [p for p in self._trainable["d" if name == "g" else "g"] if p.requires_grad]  # not one frozen since
        for p in frozen:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in frozen:
                p.requires_grad_(True)

    def update(self, optimizer, loss: Tensor) -> None:
        """One optimizer step on `loss`: zero_grad, backward, step."""
        optimizer.zero_grad(set_to_none=True)
        if self._plain_backward:
            loss.backward()
        else:
            self.manual_backward(loss)
        optimizer.step()  # Lightning's: its step count, then on_before_optimizer_step (clipping, norms)

    def regularization_step(self, optimizer, loss: Tensor) -> None:
        """One more step of `optimizer` on a lazy regulariser's loss alone (StyleGAN2's "reg" phases).

        The step goes to the torch optimizer under Lightning's wrapper (its public `.optimizer`), so Lightning
        does not count it: `global_step`, and so g_steps and d_steps, keep counting the main steps. Under fp16
        the precision plugin's GradScaler scales, steps and updates as for a main step; no clipping (as NVlabs).
        """
        raw = optimizer.optimizer
        raw.zero_grad(set_to_none=True)
        if self._plain_backward:
            loss.backward()
        else:
            self.manual_backward(loss)  # DDP's gradient sync, the scaler's loss scaling
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None and scaler.is_enabled():
            scaler.step(raw)
            scaler.update()
        else:
            raw.step()

    def _unheard(self, *hooks: str) -> bool:
        """One process, no loss scaling (fp32 or bf16), no profiler, and no callback (nor this module) implementing
        any of `hooks`: then Lightning's calls around a backward only dispatch hooks nobody listens to, over every
        callback, a fixed cost of the small steps (bench/step_overhead.py). DDP, fp16's GradScaler, a profiler and
        any listener keep Lightning's path (public calls only: no private part is needed for this)."""
        trainer, plugin = self.trainer, self.trainer.precision_plugin
        unscaled = type(plugin) is Precision or (type(plugin) is MixedPrecision and plugin.scaler is None)
        if not unscaled or type(trainer.strategy) is not SingleDeviceStrategy:
            return False
        if type(trainer.profiler) is not PassThroughProfiler:
            return False

        def overrides(obj, base, hook: str) -> bool:  # an instance attribute counts too
            return hasattr(base, hook) and getattr(getattr(obj, hook), "__func__", None) is not getattr(base, hook)

        listeners = [(cb, L.Callback) for cb in trainer.callbacks] + [(self, L.LightningModule)]
        return not any(overrides(obj, base, hook) for obj, base in listeners for hook in hooks)

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Clip and log the gradient norm of the network about to step (gradients already unscaled under AMP)."""
        name = "g" if optimizer is self._optimizer_g else "d"
        max_norm = self.clip_norm[name]
        if max_norm is None and not self._logging:
            return  # the norm is only logged: not computed on other batches
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None and scaler.is_enabled() and compat.unscales_in_kernel(optimizer):
            scaler.unscale_(optimizer)  # Lightning leaves a fused optimizer's gradients scaled (it unscales in-kernel)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if max_norm is not None:
            norm = clip_grad_norm_(params, max_norm)  # returns the norm before clipping
        else:
            norm = get_total_norm([p.grad for p in params])
        self.log_scalar(f"train/{name}_grad_norm", norm)  # a tensor: no device sync here

    def step_schedulers(self) -> None:
        """Both schedules count generator steps (cycles): g_steps is their length."""
        for scheduler in self._schedulers.values():
            if scheduler is not None:
                scheduler.step()

    # ---- training scalars ----------------------------------------------------------------------
    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        """Whether this batch's values reach the loggers (every trainer.log_every_n_steps batches): what only
        logging needs (the scalars, gradient norms) is done on those batches alone, a fixed cost saved per step."""
        self._logging = compat.is_logging_batch(self.trainer)

    def log_scalar(self, name: str, value: Tensor | float, prog_bar: bool = False) -> None:
        """Keep a training scalar for this batch's loggers (on logging steps only); `publish_scalars` sends them."""
        if self._logging:
            self._scalars[name] = value
            if prog_bar:
                self._prog_bar[name] = None

    def publish_scalars(self) -> None:
        """This logging step's training scalars to the loggers, the callback metrics and the progress bar, with one
        device read for all of them: what `self.log` does for a training-step value, without its per-call cost
        and per-batch device read (bench/step_overhead.py: a logging step costs 0.8 ms more than the steps around
        it, 3.2 ms with `self.log`)."""
        if not self._scalars:
            return
        metrics = {name: float(v) for name, v in self._scalars.items() if not isinstance(v, Tensor)}
        tensors = {name: v for name, v in self._scalars.items() if isinstance(v, Tensor)}
        if tensors:  # one sync for all of them
            read = torch.stack([v.detach().float() for v in tensors.values()]).tolist()
            metrics.update(zip(tensors, read, strict=True))
        self._scalars = {}
        compat.log_training_scalars(self.trainer, metrics, self._prog_bar)
