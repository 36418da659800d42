"""metrics.critic: at the end of training, a fresh critic judges the frozen generator against held-out data."""

from __future__ import annotations

import logging

import lightning as L
import torch

from gankit.critic import judge_generator
from gankit.lightning_compat import logger_step

log = logging.getLogger(__name__)


class CriticCheck(L.Callback):
    """The survey's second stage, run once when training ends (`enabled: true`): `val/critic` (the divergence
    estimate against held-out data), `val/critic_train` (against training data) and `val/critic_seconds`.
    See gankit.critic for the recipe; the numbers depend only on the weights and `seed`."""

    def __init__(
        self,
        enabled: bool = False,
        steps: int = 2000,
        batch_size: int = 64,
        lr: float = 2e-4,
        gp_weight: float = 10.0,
        ema_decay: float = 0.999,
        max_samples: int = 10000,
        seed: int = 0,
        width: int = 64,
    ) -> None:
        if steps < 1 or batch_size < 1:
            raise ValueError(f"metrics.critic: steps and batch_size must be >= 1, got {steps} and {batch_size}")
        self.enabled, self.max_samples, self.seed = enabled, max_samples, seed
        self.settings = {"steps": steps, "batch_size": batch_size, "lr": lr, "gp_weight": gp_weight,
                         "ema_decay": ema_decay, "width": width}  # fmt: skip

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Refuse a set without enough held-out data before anything else starts (the evaluation's real
        features, which take minutes with Inception, are computed at fit start)."""
        if stage != "fit":
            return
        datamodule = trainer.datamodule
        if self.enabled and datamodule.train_set is None:
            datamodule.setup("fit")
        held = getattr(datamodule, "heldout_set", None)
        need = 2 * self.settings["batch_size"]
        if self.enabled and (held is None or len(held) < need):
            raise ValueError(
                f"metrics.critic trains on held-out data (at least {need} images); this data set holds out "
                f"{'none' if held is None else len(held)}: {datamodule.holdout_advice}"
            )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled:
            return
        results = judge_generator(pl_module, trainer.datamodule, self.max_samples, self.seed, **self.settings)
        values = {f"val/{k}": v for k, v in results.items()}
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in values.items()})
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics({**values, "g_step": pl_module.g_steps}, step=logger_step(trainer))
