"""GANModule: alternating discriminator and generator updates.

One training batch is one discriminator step on that batch of real images. After every
`n_critic`-th discriminator step comes one generator step, so each critic step sees fresh real
data (as in WGAN-GP's reference algorithm). Lightning's `global_step` counts both optimizers'
steps; the properties `d_steps` and `g_steps` say what happened in user terms, and are derived
from it (so they survive a restart with the checkpoint, and need no state of their own).

Building blocks any recipe switches on by config: PacGAN packing (`pack`), DiffAugment
(`augment`), adaptive augmentation (`ada`, gankit.ada), the WGAN-GP gradient penalty (`gp_weight`),
R1 (`r1_gamma`, lazily every `r1_every` D steps, until generator step `r1_until`), LeCam (`lecam`,
gankit.lecam), gradient-norm clipping, a generator EMA (a decay per step, or StyleGAN's half-life in
images), separate G / D optimizers (TTUR), top-k training (`top_k`: G learns from the fakes D rates
best), and for a style-based G, style mixing (`style_mixing`, gankit.style_mixing) and the lazy
path-length penalty (`path_length`, gankit.path_length: its own G step). Spectral
norm lives in the networks (`discriminator.spectral_norm`). How the steps run under Lightning
(frozen networks, fast optimizer steps, logging, resume) is `AlternatingSteps`' business.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gankit.ada import AdaptiveAugment
from gankit.augment import DiffAugment
from gankit.ema import GeneratorEMA
from gankit.infogan import InfoCodes
from gankit.lecam import LeCam
from gankit.losses import get_loss, top_k
from gankit.metric_keys import ADA_KEYS, LECAM_KEYS
from gankit.module_base import AlternatingSteps, OptimizerFactory, SchedulerFactory
from gankit.path_length import PathLength, lazy_corrected
from gankit.randomness import labels_in_proportion
from gankit.recipe_checks import check_recipe
from gankit.regularizers import gradient_penalty, pack, r1_penalty
from gankit.style_mixing import check_style_mixing, mixed_styles, style_based


class GANModule(AlternatingSteps):
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
        ema_kimg: float | None = None,
        ema_rampup: float | None = None,
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
        ada: dict | None = None,
        lecam: dict | None = None,
        style_mixing: float | None = None,
        path_length: dict | None = None,
        compile: bool | dict | None = None,
        channels_last: bool = False,
    ) -> None:
        style_mixing = check_style_mixing(generator, style_mixing)
        path_length = PathLength(**path_length) if path_length is not None else None
        if path_length is not None:
            if not style_based(generator):
                raise ValueError(
                    "model.path_length differentiates the images by the per-layer styles w of a style-based generator "
                    f"(model=stylegan2); {type(generator).__name__} has none: set model.path_length=null"
                )
            g_optimizer = lazy_corrected(g_optimizer, path_length.every)  # its own steps: k + 1 per k
        super().__init__(
            optimizers={"g": g_optimizer, "d": d_optimizer},
            schedulers={"g": g_scheduler, "d": d_scheduler},
            clip_norm={"g": g_clip_norm, "d": d_clip_norm},
            compile=compile,
            channels_last=channels_last,
        )
        self.top_k = check_recipe(
            generator, discriminator, n_critic=n_critic, gp_weight=gp_weight, r1_gamma=r1_gamma,
            r1_every=r1_every, r1_until=r1_until, pack=pack, num_classes=num_classes, conditional=conditional,
            info=info, top_k=top_k,
        )  # fmt: skip
        self.generator, self.discriminator = generator, discriminator
        self.num_classes: int | None = getattr(generator, "num_classes", None)
        self.latent_dim: int = generator.latent_dim
        self.loss_name, self.loss = loss, get_loss(loss)
        self.n_critic, self.pack = int(n_critic), int(pack)
        self.gp_weight, self.r1_gamma, self.r1_every = gp_weight, r1_gamma, int(r1_every)
        self.r1_until = None if r1_until is None else int(r1_until)
        self.augment = DiffAugment(augment) if augment else None
        self.augment_pipe = AdaptiveAugment(**ada) if ada is not None else None  # ADA: p and r_t in the checkpoint
        self.lecam = LeCam(**lecam) if lecam is not None else None  # its two averages in the checkpoint
        self.info = InfoCodes(self.latent_dim, discriminator.feature_dim, **info) if info else None
        self.style_mixing, self.path_length = style_mixing, path_length  # path_length's running mean: a buffer
        if ema_decay is not None and ema_kimg is not None:
            raise ValueError(
                f"model.ema_decay={ema_decay} and model.ema_kimg={ema_kimg} are two ways to set the generator EMA: "
                "keep one (the other null)"
            )
        if ema_rampup is not None and ema_kimg is None:
            raise ValueError(
                f"model.ema_rampup={ema_rampup} ramps up StyleGAN's EMA, which model.ema_kimg sets: set both"
            )
        use_ema = ema_decay is not None or ema_kimg is not None
        self.generator_ema = GeneratorEMA(generator, ema_decay, ema_kimg, ema_rampup) if use_ema else None
        if self.num_classes is not None:  # the training labels' class shares (set at fit start; saved)
            self.register_buffer("class_weights", torch.full((self.num_classes,), 1.0 / self.num_classes))

    def parameters_of(self, name: str) -> list[nn.Parameter]:
        if name == "g":
            return list(self.generator.parameters())
        q_head = list(self.info.parameters()) if self.info is not None else []  # InfoGAN's Q: part of D
        return [*self.discriminator.parameters(), *q_head]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        datamodule = getattr(self.trainer, "datamodule", None)
        if hasattr(datamodule, "split_settings"):  # what was trained on, and so what is held out
            checkpoint["data_split"] = datamodule.split_settings()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self._restored_split = checkpoint.get("data_split")  # compared with this run's in on_train_start

    def on_train_start(self) -> None:
        super().on_train_start()
        datamodule, saved = getattr(self.trainer, "datamodule", None), getattr(self, "_restored_split", None)
        if saved is not None and hasattr(datamodule, "split_settings") and saved != datamodule.split_settings():
            raise ValueError(
                f"the checkpoint was trained on data.limit / data.holdout / data.seed = {saved}, this run asks for "
                f"{datamodule.split_settings()}: resumed, its held-out set would hold images D trained on. "
                "Resume with the checkpoint's values (or start a new run)."
            )

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

    # ---- the training step ----------------------------------------------------------------------
    def training_step(self, batch: Tensor | tuple[Tensor, ...], batch_idx: int) -> dict[str, Tensor]:
        real = batch[0] if isinstance(batch, (tuple, list)) else batch  # [N, C, H, W] in [-1, 1]
        if self.channels_last and real.ndim == 4 and real.is_cuda:
            real = real.contiguous(memory_format=torch.channels_last)
        y_real = batch[1] if self.num_classes is not None else None  # conditional: the data's labels
        opt_g, opt_d = self.optimizers()
        out = self.d_step(real, y_real, opt_d)
        if self.d_steps % self.n_critic == 0:  # this batch closes a cycle: one G step
            pl_due = self.path_length is not None and self.path_length.due(self.g_steps)
            out["g_loss"] = self.g_step(len(real), opt_g)
            if pl_due:
                self.path_length_step(len(real), opt_g)
            self.step_schedulers()
            if self.generator_ema is not None:
                batch = len(real) * self.trainer.world_size
                seen = self.images_seen - batch  # before this batch, as NVlabs' cur_nimg (0 at the first update)
                self.generator_ema.update(self.generator, self.g_steps, batch=batch, images_seen=seen)
        self.publish_scalars()
        return out  # detached: read by callbacks (e.g. the non-finite loss guard)

    def d_step(self, real: Tensor, y_real: Tensor | None, opt_d) -> dict[str, Tensor]:
        """D learns to score real above fake, plus its penalties; G is frozen (its forward builds no graph)."""
        with self.training_only("d"):
            fake, y_fake, codes = self.generate(len(real))
            real_in, fake_in = self.d_input(real), self.d_input(fake)
            r1_due = self.r1_due()
            if r1_due:  # R1 differentiates this very forward pass: no second one on the real batch
                real_in = real_in.detach().requires_grad_(True)
            d_real = self._d(real_in, y_real)  # logits [N / pack]
            d_fake, info_loss = self._d_fake(fake_in, y_fake, codes)
            penalties = self.d_penalties(real_in, fake_in, y_real, d_real if r1_due else None)
            if self.lecam is not None and (lecam := self.lecam(d_real, d_fake, self.g_steps)) is not None:
                self.log_scalar(LECAM_KEYS[0], lecam.detach())  # weight * R (gankit.lecam)
                penalties = _plus(lecam, penalties)
            d_loss = _plus(self.loss.d(d_real, d_fake), penalties, info_loss)
            self.update(opt_d, d_loss)
        if self.augment_pipe is not None:  # ADA: r_t from D's logits on augmented reals, p every `interval` D steps
            self.augment_pipe.accumulate(d_real)
            self.augment_pipe.adjust(self.d_steps, batch=len(real) * self.trainer.world_size)
            self.log_scalar(ADA_KEYS[0], self.augment_pipe.p)  # train/ada_p
            self.log_scalar(ADA_KEYS[1], self.augment_pipe.rt)  # train/ada_rt
        # D's logits ride along for callbacks that need them every step (the collapse monitor's AUC)
        out = {"d_loss": d_loss.detach(), "d_real": d_real.detach(), "d_fake": d_fake.detach()}
        if self._logging:
            self.log_scalar("train/d_loss", out["d_loss"], prog_bar=True)
            self.log_scalar("train/d_real", out["d_real"].mean())
            self.log_scalar("train/d_fake", out["d_fake"].mean())
            self.log_scalar("train/d_auc", pairwise_auc(out["d_real"], out["d_fake"]))
            self.log_scalar("train/d_lr", opt_d.param_groups[0]["lr"])
            self.log_scalar("train/g_lr", self.optimizers()[0].param_groups[0]["lr"])
        return out

    def g_step(self, n: int, opt_g) -> Tensor:
        """G learns to make D score its fakes as real (top-k: only the fakes D rates best); D is frozen."""
        with self.training_only("g"):
            fake, y_fake, codes = self.generate(n)
            d_fake, info_loss = self._d_fake(self.d_input(fake), y_fake, codes)
            if self.top_k is not None:
                fraction = self.top_k_fraction()
                d_fake = top_k(d_fake, fraction)
                self.log_scalar("train/top_k_fraction", fraction)
            g_loss = _plus(self.loss.g(d_fake), info_loss)
            if self.info is not None:
                self.log_scalar("train/info_loss", info_loss.detach())
            self.update(opt_g, g_loss)
        self.log_scalar("train/g_loss", g_loss.detach(), prog_bar=True)
        return g_loss.detach()

    def path_length_step(self, n: int, opt_g) -> None:
        """G's lazy regulariser, on its own optimizer step (NVlabs' Greg phase): the path-length penalty on
        n // batch_shrink fakes (mixed styles, as the main step's), times its interval."""
        with self.training_only("g"):
            z, y, _ = self.latents(max(1, n // self.path_length.batch_shrink))
            ws = mixed_styles(self.generator, z, y, self.style_mixing)
            penalty = self.path_length(self.generator.synthesis(ws), ws)
            self.regularization_step(opt_g, penalty)
        self.log_scalar("train/pl_penalty", penalty.detach() / (self.path_length.weight * self.path_length.every))
        self.log_scalar("train/pl_mean", self.path_length.mean)

    def d_penalties(self, real_in: Tensor, fake_in: Tensor, y_real: Tensor | None, d_real: Tensor | None):
        """What D's loss adds (0 when nothing is on): the WGAN-GP penalty, gp_weight * E[(|grad D(x_mix)| - 1)^2],
        and lazy R1, (r1_gamma / 2) * r1_every * E[|grad D(x_real)|^2] on the D steps where `d_real` (D's logits on
        `real_in`, which requires grad) is given. A conditional D is penalised at the real labels (GP interpolates
        images, not labels, as in conditional WGAN-GP practice)."""
        total: Tensor | float = 0.0
        if self.gp_weight is None and d_real is None:
            return total
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)  # fp16 mixed precision only
        critic = lambda x: self._d(x, y_real)  # noqa: E731
        if self.gp_weight is not None:
            gp = gradient_penalty(critic, real_in, fake_in, scaler)
            self.log_scalar("train/gradient_penalty", gp.detach())
            total = total + self.gp_weight * gp
        if d_real is not None:
            r1 = r1_penalty(critic, real_in, scaler, output=d_real)
            self.log_scalar("train/r1_penalty", r1.detach())
            total = total + (self.r1_gamma / 2) * self.r1_every * r1  # lazy: weighted by the interval
        return total

    # ---- the schedule -------------------------------------------------------------------------
    def r1_due(self) -> bool:
        """R1 on this D step: every `r1_every`-th one, before generator step `r1_until` (if set)."""
        if self.r1_gamma is None or self.d_steps % self.r1_every:
            return False
        return self.r1_until is None or self.g_steps < self.r1_until

    def top_k_fraction(self) -> float:
        """Top-k training's share of fakes in G's loss: decay^epoch, at least min_fraction (Sinha et al. 2020)."""
        return max(self.top_k["min_fraction"], self.top_k["decay"] ** self.current_epoch)

    # ---- what the networks see ------------------------------------------------------------------
    def generate(self, n: int) -> tuple[Tensor, Tensor | None, tuple[Tensor, Tensor] | None]:
        """n fakes from the training noise stream: (images, their classes or None, InfoGAN's codes or None)."""
        z, y, codes = self.latents(n)
        if self.style_mixing:
            return self.generator.synthesis(mixed_styles(self.generator, z, y, self.style_mixing)), y, codes
        return self._g(z, y), y, codes

    def latents(self, n: int) -> tuple[Tensor, Tensor | None, tuple[Tensor, Tensor] | None]:
        """n latents from the training noise stream, with random classes (conditional) and InfoGAN's codes."""
        y = None if self.num_classes is None else torch.randint(self.num_classes, (n,), device=self.device)
        if self.info is None:
            return self.sample_latent(n), y, None
        z, cat, cont = self.info.sample(n, device=self.device)
        return z, y, (cat, cont)

    def d_input(self, x: Tensor) -> Tensor:
        """What D sees of a batch: ADA, DiffAugment (same policy for real and fake), then PacGAN packing."""
        if self.augment_pipe is not None:
            x = self.augment_pipe(x)
        if self.augment is not None:
            x = self.augment(x)
        return pack(x, self.pack)

    @torch.no_grad()
    def d_scores(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """D's logits on images as they are (no augmentation; packed), in eval mode: for the metrics."""
        was_training = self.discriminator.training
        self.discriminator.eval()
        try:
            return self._d(pack(x.to(self.device), self.pack), None if y is None else y.to(self.device))
        finally:
            self.discriminator.train(was_training)

    def _g(self, z: Tensor, y: Tensor | None) -> Tensor:
        return self.generator(z) if y is None else self.generator(z, y)

    def _d(self, x: Tensor, y: Tensor | None) -> Tensor:
        return self.discriminator(x) if y is None else self.discriminator(x, y)

    def _d_fake(self, fake_in: Tensor, y: Tensor | None, codes) -> tuple[Tensor, Tensor | float]:
        """D's logits on fakes, and InfoGAN's code-recovery loss from the same pass (0 without InfoGAN)."""
        if codes is None:
            return self._d(fake_in, y), 0.0
        logits, features = self.discriminator(fake_in, features=True)
        return logits, self.info.loss(features, *codes)

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

    truncation_psi = 1.0  # sample()'s truncation, for a style-based G (set_truncation)

    def set_truncation(self, psi: float) -> None:
        """Sample at truncation psi from now on: w = w_avg + psi * (w - w_avg) (generate / eval truncation_psi)."""
        if isinstance(psi, bool) or not isinstance(psi, (int, float)) or not 0 <= psi <= 1:
            raise ValueError(f"truncation_psi must be a number in [0, 1] (1: no truncation), got {psi!r}")
        if psi != 1 and not style_based(self.generator):
            raise ValueError(
                f"truncation_psi={psi} needs a style-based generator (model=stylegan2), and this checkpoint's is "
                f"{type(self.generator).__module__}.{type(self.generator).__name__}: leave truncation_psi at 1"
            )
        self.truncation_psi = float(psi)

    def sampler(self, ema: bool = True) -> nn.Module:
        """The generator samples come from: the EMA one when there is one and `ema`, else the live one."""
        return self._ema_generator() if ema and self.generator_ema is not None else self.generator

    @torch.no_grad()
    def sample(self, z: Tensor, ema: bool = True, labels: Tensor | None = None) -> Tensor:
        """Samples for latents z (and labels, for a conditional model: balanced by default), from the EMA
        generator when there is one, in eval mode (a style-based G: at `truncation_psi`)."""
        net = self.sampler(ema)
        kwargs = {"truncation_psi": self.truncation_psi} if self.truncation_psi != 1 else {}
        was_training = net.training
        net.eval()
        try:
            if self.num_classes is None:
                return net(z.to(self.device), **kwargs)
            labels = self.balanced_labels(len(z)) if labels is None else labels.to(self.device)
            return net(z.to(self.device), labels, **kwargs)
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
    def broadcast_buffers(self) -> None:
        """Rank 0's generator and discriminator buffers (batch-norm statistics, spectral norm's vectors) on every
        rank: DDP keeps them per rank (broadcast_buffers=False), and the saved weights are rank 0's. Training is
        unchanged: batch norm normalises by the batch in training mode, and spectral norm's vectors follow the
        weights, which DDP keeps equal."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for net in (self.generator, self.discriminator):
                for buffer in net.buffers():
                    torch.distributed.broadcast(buffer, src=0)


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
