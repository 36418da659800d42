"""Stop a run whose losses turned NaN or infinite before a checkpoint can keep the broken weights."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor


class NonFiniteLossGuard(L.Callback):
    """Checks the latest losses every `every_n_steps` batches and before every checkpoint save.

    A check reads one number from the device, so it runs at an interval rather than every step.
    Raising in `on_save_checkpoint` aborts that save: `last.ckpt` keeps the last finite weights.
    """

    def __init__(self, every_n_steps: int = 50) -> None:
        super().__init__()
        self.every = every_n_steps
        self._latest: dict[str, Tensor] = {}

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        self._latest.update(outputs or {})
        if (batch_idx + 1) % self.every == 0:
            self.check(trainer, pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.check(trainer, pl_module)

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Raise FloatingPointError naming the loss, the step and what to try."""
        if not self._latest:
            return
        names = list(self._latest)
        finite = torch.isfinite(torch.stack([self._latest[k].float() for k in names])).tolist()
        bad = [f"train/{k}" for k, ok in zip(names, finite, strict=True) if not ok]
        if bad:
            raise FloatingPointError(
                f"{' and '.join(bad)} became non-finite by generator step {pl_module.g_steps} "
                f"(epoch {trainer.current_epoch}); training stopped and no checkpoint was written "
                "with these weights. Resume from the last checkpoint with lower learning rates "
                "(model.g_optimizer.lr, model.d_optimizer.lr) or gradient clipping (model.d_clip_norm)."
            )
