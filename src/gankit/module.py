"""GANModule: alternating discriminator and generator updates with Lightning manual optimisation.

One training batch is one discriminator step on that batch of real images. After every
`n_critic`-th discriminator step comes one generator step, so each critic step sees fresh real
data (as in WGAN-GP's reference algorithm). Lightning's `global_step` counts both optimizers'
steps; the properties `d_steps` and `g_steps` say what happened in user terms, and are derived
from it (so they survive a restart with the checkpoint, and need no state of their own).

Building blocks any recipe switches on by config: PacGAN packing (`pack`), DiffAugment
(`augment`), the WGAN-GP gradient penalty (`gp_weight`), R1 (`r1_gamma`, lazily every `r1_every`
D steps, until generator step `r1_until`), gradient-norm clipping, a generator EMA, separate G / D
optimizers (TTUR) and top-k training (`top_k`: G learns from the fakes D rates best). Spectral
norm lives in the networks (`discriminator.spectral_norm`).
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

from gankit.augment import DiffAugment
from gankit.checkpoints import keep_epoch_position
from gankit.ema import GeneratorEMA
from gankit.infogan import InfoCodes
from gankit.losses import get_loss, top_k
from gankit.randomness import (
    labels_in_proportion,
    seed_training_stream,
    set_training_stream_state,
    training_stream_state,
)
from gankit.regularizers import gradient_penalty, pack, r1_penalty

log = logging.getLogger(__name__)


def skip_failing_nvml_check() -> bool:
    """Undo Lightning's `PYTORCH_NVML_BASED_CUDA_CHECK=1` where NVML cannot answer (CPU-only machines, MIG).

    Importing Lightning sets it so that `torch.cuda.is_available()` asks NVML rather than the CUDA
    runtime (which would poison a later fork). Adam and AdamW ask that on every step (a CUDA-graph
    health check), and where there is no NVML library each call is a failed `dlopen` of it before
    the fallback to the runtime count: 0.044 ms a call against 0.001 ms (2 CPU cores), twice per
    generator step. Where NVML fails (no library, or MIG devices it does not count), the check's
    answer is the runtime's either way, so dropping the variable changes no result, only its cost.
    Returns whether it was dropped.
    """
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") != "1" or not torch.backends.cuda.is_built():
        return False
    if torch.version.hip:  # ROCm answers through amdsmi with the variable set, without initialising the GPU
        return False
    try:
        nvml_failed = torch.cuda._device_count_nvml() < 0  # private: -1 when NVML cannot be loaded or initialised
    except Exception:  # noqa: BLE001 - a torch without this helper: leave Lightning's setting alone
        return False
    if nvml_failed:
        del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]
    return nvml_failed


skip_failing_nvml_check()

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
SchedulerFactory = Callable[[Optimizer], LRScheduler]


class GANModule(L.LightningModule):
    """A generator, a discriminator, an adversarial loss and the order in which they are updated."""

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        g_optimizer: OptimizerFactory,
        d_optimizer: OptimizerFactory,
        loss: str = "non_saturating",
        n_critic: int = 1,
        g_clip_norm: float | None = None,
        d_clip_norm: float | None = None,
        ema_decay: float | None = None,
        g_scheduler: SchedulerFactory | None = None,
        d_scheduler: SchedulerFactory | None = None,
        pack: int = 1,
        gp_weight: float | None = None,
        r1_gamma: float | None = None,
        r1_every: int = 1,
        r1_until: int | None = None,
        augment: str | list[str] | None = None,
        num_classes: int | None = None,
        conditional: bool = False,
        info: dict | None = None,
        top_k: dict | None = None,
        compile: bool | dict | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        if int(n_critic) != n_critic or n_critic < 1:
            raise ValueError(
                f"n_critic (discriminator steps per generator step) must be an integer >= 1, got {n_critic}"
            )
        for name, value in (("g_clip_norm", g_clip_norm), ("d_clip_norm", d_clip_norm)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be a positive gradient norm, or null for no clipping; got {value}")
        for name, value in (("gp_weight", gp_weight), ("r1_gamma", r1_gamma)):
            if value is not None and not value > 0:
                raise ValueError(f"model.{name} must be positive, or null to switch it off; got {value}")
        if top_k is not None:
            top_k = {"decay": 0.99, "min_fraction": 0.5, **top_k}
            if set(top_k) != {"decay", "min_fraction"} or not (
                0 < top_k["decay"] <= 1 and 0 < top_k["min_fraction"] <= 1
            ):
                raise ValueError(
                    f"model.top_k takes decay (per epoch) and min_fraction, both in (0, 1]; got {dict(top_k)}"
                )
        self.top_k = top_k
        if int(r1_every) != r1_every or r1_every < 1:
            raise ValueError(f"model.r1_every (D steps between R1 penalties) must be an integer >= 1, got {r1_every}")
        if r1_until is not None and (int(r1_until) != r1_until or r1_until < 1):
            raise ValueError(
                f"model.r1_until (the generator step R1 stops at) must be an integer >= 1, or null for the whole "
                f"run; got {r1_until}"
            )
        if getattr(discriminator, "pack", 1) != pack:
            raise ValueError(
                f"model.pack={pack} but the discriminator takes {getattr(discriminator, 'pack', 1)} samples at once; "
                "leave model.discriminator.pack at ${model.pack}"
            )
        if conditional and num_classes is None:
            raise ValueError(
                "this model is conditional, but the data has no labels (data.num_classes is null): "
                "train it on labelled data (data=mnist, stacked_mnist, ring, grid) or choose an unconditional model"
            )
        self.num_classes: int | None = getattr(generator, "num_classes", None)
        if num_classes is not None and num_classes != self.num_classes:
            raise ValueError(
                f"model.num_classes={num_classes} but the generator is conditioned on {self.num_classes}; "
                "leave model.generator.num_classes at ${model.num_classes}"
            )
        if getattr(discriminator, "num_classes", None) != self.num_classes:
            raise ValueError(
                f"the generator is conditioned on {self.num_classes} classes but the discriminator on "
                f"{getattr(discriminator, 'num_classes', None)}: set both num_classes alike"
            )
        if self.num_classes is not None and pack != 1:
            raise ValueError("model.pack > 1 packs samples of different classes: a conditional model takes pack=1")
        self.generator, self.discriminator = generator, discriminator
        self.latent_dim: int = generator.latent_dim
        self.pack, self.gp_weight, self.r1_gamma, self.r1_every = int(pack), gp_weight, r1_gamma, int(r1_every)
        self.r1_until = None if r1_until is None else int(r1_until)
        self.augment = DiffAugment(augment) if augment else None
        self.info: InfoCodes | None = None
        if info:
            if not hasattr(discriminator, "feature_dim") or self.num_classes is not None or self.pack != 1:
                raise ValueError(
                    "model.info (InfoGAN) needs an unconditional, unpacked discriminator that exposes its features "
                    "(the DCGAN one: model=infogan)"
                )
            self.info = InfoCodes(self.latent_dim, discriminator.feature_dim, **info)
        self.loss_name, self.loss = loss, get_loss(loss)
        self.n_critic = int(n_critic)
        self.clip_norm = {"g": g_clip_norm, "d": d_clip_norm}
        self.generator_ema = GeneratorEMA(generator, ema_decay) if ema_decay is not None else None
        if self.num_classes is not None:  # the training labels' class shares (set at fit start; saved)
            self.register_buffer("class_weights", torch.full((self.num_classes,), 1.0 / self.num_classes))
        self._factories = {"g": (g_optimizer, g_scheduler), "d": (d_optimizer, d_scheduler)}
        self._schedulers: dict[str, LRScheduler | None] = {"g": None, "d": None}
        self._scheduler_settings: dict[str, dict] = {}
        self._restored_stream: dict | None = None
        if compile not in (None, False) and not isinstance(compile, (bool, Mapping)):
            raise ValueError(f"model.compile takes true, false or torch.compile's options as a dict; got {compile!r}")
        self.compile_options = None if compile in (None, False) else ({} if compile is True else dict(compile))
        self.channels_last = channels_last
        self._logging = True  # this batch is a logging step (set in on_train_batch_start)
        self._scalars: dict[str, Tensor | float] = {}  # this logging step's training scalars (see `_log`)
        self._prog_bar: dict[str, None] = {}  # the names among them shown in the progress bar, in order
        self._optimizer_g: Optimizer | None = None
        self._trainable: dict[str, list[nn.Parameter]] = {}  # each optimizer's trainable parameters (fit start)
        self._plain_backward = False  # loss.backward() is all manual_backward would do (decided at fit start)
        self._plain_step = False  # and the wrapped optimizer's step all LightningOptimizer.step would (the same)

    def configure_model(self) -> None:
        """`model.compile`: torch.compile G and D in place (state_dict keys unchanged; the EMA copy stays eager).

        Each network gets one graph with gradients and one frozen (`_training` flips
        requires_grad, a guard that recompiles once, not every step); G and D share the frame of
        nn.Module's call, so the recompile limit is raised to hold their graphs.
        `model.channels_last`: conv weights (and images, in training_step) in NHWC on CUDA.
        """
        if self.channels_last and self.device.type == "cuda":
            self.generator.to(memory_format=torch.channels_last)
            self.discriminator.to(memory_format=torch.channels_last)
        if self.compile_options is not None and not getattr(self, "_compiled", False):
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 16)
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

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.num_classes is not None and hasattr(datamodule, "class_weights"):
            weights = datamodule.class_weights()
            if weights is not None and len(weights) == self.num_classes:
                self.class_weights.copy_(weights)
                if self.generator_ema is not None:
                    self.generator_ema.stale = True

    # ---- run length in user terms -------------------------------------------------------------
    @property
    def g_steps(self) -> int:
        """Generator updates so far. Each cycle is n_critic D steps then one G step."""
        return self.trainer.global_step // (self.n_critic + 1)

    @property
    def d_steps(self) -> int:
        """Discriminator updates so far (one per training batch)."""
        return self.trainer.global_step - self.g_steps

    @property
    def images_seen(self) -> int:
        """Real images the discriminator has seen, over all processes: a training length comparable across
        batch sizes, n_critic and process counts, where steps are not (StyleGAN counts in kimg)."""
        trainer = self.trainer
        batch_size = getattr(trainer.datamodule, "batch_size", 0)  # per process; 0: a data module that does not say
        return self.d_steps * batch_size * trainer.world_size

    @property
    def kimg(self) -> float:
        return self.images_seen / 1000

    # ---- sampling -----------------------------------------------------------------------------
    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """z ~ N(0, I), shape [n, latent_dim], on this module's device (InfoGAN: noise and codes)."""
        if self.info is not None:
            return self.info.sample(n, generator, self.device)[0]
        z = torch.randn(n, self.latent_dim, generator=generator)
        return z.to(self.device)

    def balanced_labels(self, n: int) -> Tensor | None:
        """Labels 0, 1, ..., K-1, 0, 1, ... for n samples of a conditional model; None otherwise."""
        return None if self.num_classes is None else torch.arange(n, device=self.device) % self.num_classes

    @torch.no_grad()
    def sample(self, z: Tensor, ema: bool = True, labels: Tensor | None = None) -> Tensor:
        """Samples for latents z (and labels, for a conditional model: balanced by default), from the EMA
        generator when there is one, in eval mode."""
        net = self._ema_generator() if ema and self.generator_ema is not None else self.generator
        was_training = net.training
        net.eval()
        try:
            if self.num_classes is None:
                return net(z.to(self.device))
            labels = self.balanced_labels(len(z)) if labels is None else labels.to(self.device)
            return net(z.to(self.device), labels)
        finally:
            net.train(was_training)

    def _ema_generator(self) -> nn.Module:
        """The EMA generator, its batch-norm statistics re-estimated once per update (fixed latents and
        labels in the training labels' proportions, enough passes for every class: the same on every
        rank and at every call)."""
        if self.generator_ema.stale:
            rng = torch.Generator().manual_seed(0)
            batches = max(8, -(-2 * (self.num_classes or 0) // 256))  # every class about twice or more
            labels = None
            if self.num_classes is not None:
                labels = labels_in_proportion(self.class_weights.cpu(), 256 * batches, rng).to(self.device)

            def draw_inputs(i: int) -> tuple:
                z = self.sample_latent(256, rng)
                return (z,) if labels is None else (z, labels[256 * i : 256 * (i + 1)])

            self.generator_ema.standing_statistics(draw_inputs, batches)
        return self.generator_ema.module

    @torch.no_grad()
    def broadcast_generator_buffers(self) -> None:
        """Rank 0's generator buffers (batch-norm statistics) on every rank: DDP keeps them per rank
        (broadcast_buffers=False), and the saved weights are rank 0's."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for buffer in self.generator.buffers():
                torch.distributed.broadcast(buffer, src=0)

    def _g(self, z: Tensor, y: Tensor | None) -> Tensor:
        return self.generator(z) if y is None else self.generator(z, y)

    def _d(self, x: Tensor, y: Tensor | None) -> Tensor:
        return self.discriminator(x) if y is None else self.discriminator(x, y)

    # ---- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self):
        configs = []
        q_head = list(self.info.parameters()) if self.info is not None else []  # InfoGAN's Q: part of D
        for name, params in (
            ("g", list(self.generator.parameters())),
            ("d", [*self.discriminator.parameters(), *q_head]),
        ):
            make_optimizer, make_scheduler = self._factories[name]
            optimizer = make_optimizer(params, **self._fused(make_optimizer))
            config = {"optimizer": optimizer}
            if make_scheduler is not None:
                scheduler = make_scheduler(optimizer)
                if getattr(scheduler, "total_iters", 0) is None:
                    raise ValueError(
                        f"model.{name}_scheduler runs over the run's length (total_iters: ${{g_steps}}), but g_steps "
                        "is null: set g_steps=N (generator steps) for this recipe"
                    )
                self._schedulers[name] = scheduler
                self._scheduler_settings[name] = _settings(scheduler)
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
        for name, optimizer in zip("gd", self.trainer.optimizers, strict=True):
            self._trainable[name] = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
        self._plain_backward = self._unheard("on_before_backward", "on_after_backward", "backward")
        self._plain_step = self._unheard("on_before_optimizer_step", module=False) and all(
            hasattr(optimizer, "_on_before_step") for optimizer in self.optimizers()
        )
        for name, scheduler in self._schedulers.items():
            if scheduler is not None and _settings(scheduler) != self._scheduler_settings[name]:
                log.info("model.%s_scheduler: this run's settings %s at step %d (the checkpoint had %s)",
                         name, self._scheduler_settings[name], scheduler.last_epoch, _settings(scheduler))  # fmt: skip
                scheduler.__dict__.update(self._scheduler_settings[name])
                if hasattr(scheduler, "_get_closed_form_lr"):  # the new schedule's value at the restored step
                    for group, lr in zip(
                        scheduler.optimizer.param_groups, scheduler._get_closed_form_lr(), strict=True
                    ):
                        group["lr"] = lr
                    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
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
        keep_epoch_position(self.trainer, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._restored_stream = checkpoint.get("training_stream")  # applied in on_train_start

    def training_step(self, batch: Tensor | tuple[Tensor, ...], batch_idx: int) -> dict[str, Tensor]:
        real = batch[0] if isinstance(batch, (tuple, list)) else batch  # [N, C, H, W] in [-1, 1]
        if self.channels_last and real.ndim == 4 and real.is_cuda:
            real = real.contiguous(memory_format=torch.channels_last)
        n = real.shape[0]
        y_real = batch[1] if self.num_classes is not None else None  # conditional: the data's labels
        opt_g, opt_d = self.optimizers()

        with self._training("d"):  # G frozen: its forward builds no graph
            y_fake = self._fake_labels(n)
            z, codes = self._latent_and_codes(n)
            fake = self._g(z, y_fake)
            real_in, fake_in = self.d_input(real), self.d_input(fake)
            r1_due = self._r1_due()
            if r1_due:  # R1 differentiates this very forward pass: no second one on the real batch
                real_in = real_in.detach().requires_grad_(True)
            d_real = self._d(real_in, y_real)  # logits [N / pack]
            d_fake, info_loss = self._d_fake(fake_in, y_fake, codes)
            penalties = self._penalties(real_in, fake_in, y_real, d_real if r1_due else None)
            d_loss = _plus(self.loss.d(d_real, d_fake), penalties, info_loss)
            opt_d.zero_grad(set_to_none=True)
            self._backward(d_loss)
            self._step(opt_d)
        # D's logits ride along for callbacks that need them every step (the collapse monitor's AUC)
        out = {"d_loss": d_loss.detach(), "d_real": d_real.detach(), "d_fake": d_fake.detach()}
        if self._logging:
            self._log("train/d_loss", out["d_loss"], prog_bar=True)
            self._log("train/d_real", out["d_real"].mean())
            self._log("train/d_fake", out["d_fake"].mean())
            self._log("train/d_auc", pairwise_auc(out["d_real"], out["d_fake"]))
            self._log("train/d_lr", opt_d.param_groups[0]["lr"])
            self._log("train/g_lr", opt_g.param_groups[0]["lr"])

        if self.d_steps % self.n_critic == 0:  # this batch closes a cycle: one G step
            with self._training("g"):  # D frozen: gradients reach G only
                y_fake = self._fake_labels(n)
                z, codes = self._latent_and_codes(n)
                d_fake, info_loss = self._d_fake(self.d_input(self._g(z, y_fake)), y_fake, codes)
                if self.top_k is not None:
                    fraction = self.top_k_fraction()
                    d_fake = top_k(d_fake, fraction)
                    self._log("train/top_k_fraction", fraction)
                g_loss = _plus(self.loss.g(d_fake), info_loss)
                if self.info is not None:
                    self._log("train/info_loss", info_loss.detach())
                opt_g.zero_grad(set_to_none=True)
                self._backward(g_loss)
                self._step(opt_g)
            self._step_scheduler("g")
            self._step_scheduler("d")  # both schedules count generator steps (cycles): g_steps is their length
            if self.generator_ema is not None:
                self.generator_ema.update(self.generator, step=self.g_steps)
            out["g_loss"] = g_loss.detach()
            self._log("train/g_loss", out["g_loss"], prog_bar=True)
        if self._scalars:
            self._publish_scalars()
        return out  # detached: read by callbacks (e.g. the non-finite loss guard)

    @contextmanager
    def _training(self, name: str) -> Iterator[None]:
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

    def _backward(self, loss: Tensor) -> None:
        """`manual_backward`, or plain `loss.backward()` where that is all it would do (see `_unheard`)."""
        if self._plain_backward:
            loss.backward()
        else:
            self.manual_backward(loss)

    def _step(self, optimizer) -> None:
        """`optimizer.step()` (a LightningOptimizer), or where no callback listens to `on_before_optimizer_step`
        (see `_unheard`) what it comes to: Lightning's step count around the wrapped optimizer's step, with this
        module's own hook (clipping, gradient norms) called directly rather than dispatched to every callback
        (about 50 us a step with the default callbacks, none of which implements it)."""
        if not self._plain_step:
            optimizer.step()
            return
        optimizer._on_before_step()  # the manual loop's progress: Lightning's global_step
        self.on_before_optimizer_step(optimizer.optimizer)
        optimizer.optimizer.step()
        optimizer._on_after_step()

    def _unheard(self, *hooks: str, module: bool = True) -> bool:
        """One process, no loss scaling (fp32 or bf16), no profiler, and no callback (nor this module, if `module`)
        implementing any of `hooks`: then Lightning's calls around a backward or an optimizer step only dispatch
        hooks nobody listens to, over every callback, a fixed cost of the small steps (bench/step_overhead.py).
        DDP, fp16's GradScaler, a profiler and any listener keep Lightning's path."""
        trainer, plugin = self.trainer, self.trainer.precision_plugin
        unscaled = type(plugin) is Precision or (type(plugin) is MixedPrecision and plugin.scaler is None)
        if not unscaled or type(trainer.strategy) is not SingleDeviceStrategy:
            return False
        if type(trainer.profiler) is not PassThroughProfiler:
            return False

        def overrides(obj, base, hook: str) -> bool:  # an instance attribute counts too
            return hasattr(base, hook) and getattr(getattr(obj, hook), "__func__", None) is not getattr(base, hook)

        listeners = [(cb, L.Callback) for cb in trainer.callbacks] + ([(self, L.LightningModule)] if module else [])
        return not any(overrides(obj, base, hook) for obj, base in listeners for hook in hooks)

    def top_k_fraction(self) -> float:
        """Top-k training's share of fakes in G's loss: decay^epoch, at least min_fraction (Sinha et al. 2020)."""
        return max(self.top_k["min_fraction"], self.top_k["decay"] ** self.current_epoch)

    def d_input(self, x: Tensor) -> Tensor:
        """What D sees of a batch: DiffAugment (same policy for real and fake), then PacGAN packing."""
        if self.augment is not None:
            x = self.augment(x)
        return pack(x, self.pack)

    def _latent_and_codes(self, n: int) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        if self.info is None:
            return self.sample_latent(n), None
        z, cat, cont = self.info.sample(n, device=self.device)
        return z, (cat, cont)

    def _d_fake(self, fake_in: Tensor, y: Tensor | None, codes) -> tuple[Tensor, Tensor | float]:
        """D's logits on fakes, and InfoGAN's code-recovery loss from the same pass (0 without InfoGAN)."""
        if codes is None:
            return self._d(fake_in, y), 0.0
        logits, features = self.discriminator(fake_in, features=True)
        return logits, self.info.loss(features, *codes)

    def _fake_labels(self, n: int) -> Tensor | None:
        """Classes for generated samples: uniform over the K classes (None for an unconditional model)."""
        return None if self.num_classes is None else torch.randint(self.num_classes, (n,), device=self.device)

    def _r1_due(self) -> bool:
        """R1 on this D step: every `r1_every`-th one, before generator step `r1_until` (if set)."""
        if self.r1_gamma is None or self.d_steps % self.r1_every:
            return False
        return self.r1_until is None or self.g_steps < self.r1_until

    def _penalties(self, real_in: Tensor, fake_in: Tensor, y_real: Tensor | None, d_real: Tensor | None):
        """Gradient penalty (WGAN-GP) and lazy R1 on D's inputs, logged; 0 when neither is on.

        R1 is due when `d_real` (D's logits on `real_in`, which requires grad) is given. A conditional
        D is penalised at the real labels (GP interpolates images, not labels, as in conditional
        WGAN-GP practice).
        """
        total: Tensor | float = 0.0
        if self.gp_weight is None and d_real is None:
            return total
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)  # fp16 mixed precision only
        critic = lambda x: self._d(x, y_real)  # noqa: E731
        if self.gp_weight is not None:
            gp = gradient_penalty(critic, real_in, fake_in, scaler)
            self._log("train/gradient_penalty", gp.detach())
            total = total + self.gp_weight * gp
        if d_real is not None:
            r1 = r1_penalty(critic, real_in, scaler, output=d_real)
            self._log("train/r1_penalty", r1.detach())
            total = total + (self.r1_gamma / 2) * self.r1_every * r1  # lazy: weighted by the interval
        return total

    def _step_scheduler(self, name: str) -> None:
        if self._schedulers[name] is not None:
            self._schedulers[name].step()

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Clip and log the gradient norm of the network about to step (gradients already unscaled under AMP)."""
        name = "g" if optimizer is self._optimizer_g else "d"
        max_norm = self.clip_norm[name]
        if max_norm is None and not self._logging:
            return  # the norm is only logged: not computed on other batches
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None and scaler.is_enabled() and getattr(optimizer, "_step_supports_amp_scaling", False):
            scaler.unscale_(optimizer)  # Lightning leaves a fused optimizer's gradients scaled (it unscales in-kernel)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if max_norm is not None:
            norm = clip_grad_norm_(params, max_norm)  # returns the norm before clipping
        else:
            norm = get_total_norm([p.grad for p in params])
        self._log(f"train/{name}_grad_norm", norm)  # a tensor: no device sync here

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        """Whether this batch's values reach the loggers (every trainer.log_every_n_steps batches): what only
        logging needs (self.log, gradient norms) is done on those batches alone, a fixed cost saved per step."""
        trainer = self.trainer
        self._logging = bool(trainer.loggers) and trainer._logger_connector.should_update_logs

    def _log(self, name: str, value: Tensor | float, prog_bar: bool = False) -> None:
        """Keep a training scalar for this batch's loggers (on logging steps only); `_publish_scalars` sends them."""
        if self._logging:
            self._scalars[name] = value
            if prog_bar:
                self._prog_bar[name] = None

    def _publish_scalars(self) -> None:
        """This logging step's training scalars to the loggers, the callback metrics and the progress bar.

        What `self.log(name, value)` does for a training-step value (on_step, Lightning's logger step,
        the `epoch` key, the last value kept for callbacks and the bar), done directly, for two reasons:
        Lightning's result collection spends about 0.3 ms of Python per `self.log` call (it moves each
        entry to the value's device by walking and deep-copying its metadata), and it reads the
        progress-bar values from the device on every batch after the first logged one, a device sync
        per step on a GPU. Here: one read for all of them, on logging steps only
        (bench/step_overhead.py: a logging step costs 0.8 ms more than the steps around it, 3.2 ms with `self.log`).
        """
        metrics = {name: float(v) for name, v in self._scalars.items() if not isinstance(v, Tensor)}
        tensors = {name: v for name, v in self._scalars.items() if isinstance(v, Tensor)}
        if tensors:  # one sync for all of them
            read = torch.stack([v.detach().float() for v in tensors.values()]).tolist()
            metrics.update(zip(tensors, read, strict=True))
        self._scalars = {}
        trainer = self.trainer
        values = {name: torch.tensor(value) for name, value in metrics.items()}  # CPU tensors, as self.log keeps
        trainer.callback_metrics.update(values)
        trainer.progress_bar_metrics.update({name: metrics[name] for name in self._prog_bar if name in metrics})
        trainer._logger_connector.log_metrics(values)  # Lightning's step and `epoch` key, as for self.log


def _plus(loss: Tensor, *terms: Tensor | float) -> Tensor:
    """loss + terms, leaving out the terms that are off (the float 0.0): each tensor add is one more kernel
    and autograd node per step, which a small step feels."""
    for term in terms:
        if isinstance(term, Tensor) or term != 0:
            loss = loss + term
    return loss


def pairwise_auc(real: Tensor, fake: Tensor) -> Tensor:
    """How often D scores a real sample above a fake one, over all (real, fake) pairs (ties count as not):
    0.5 when it cannot tell them apart, 1 when it wins outright.

    Counted per real score as the fakes strictly below it (a binary search in the sorted fake scores):
    O(N log N) rather than the N x N comparison, 16x faster at batch 512 on a CPU, the same number.
    """
    return torch.searchsorted(fake.flatten().sort().values, real.flatten()).sum() / (real.numel() * fake.numel())


_PROGRESS = ("last_epoch", "_step_count", "_last_lr", "_get_lr_called_within_step", "_is_initial")


def _settings(scheduler: LRScheduler) -> dict:
    """A scheduler's settings from the config (length, factors, ...), without its progress."""
    return {k: v for k, v in scheduler.state_dict().items() if k not in _PROGRESS}
