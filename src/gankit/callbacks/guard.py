"""Stop a run whose losses turned NaN or infinite before a checkpoint can keep the broken weights.

Under fp16 mixed precision a non-finite loss is not always divergence: the GradScaler's scaled
gradients (and a gradient penalty taken of the scaled output) overflow now and then, the scaler
skips that step, leaving the weights as they were, and halves its scale. The guard lets those
steps pass. A run that overflows on every step halves the scale on every step; once it falls
below `min_loss_scale` the guard stops the run as diverged.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor


class NonFiniteLossGuard(L.Callback):
    """Checks the latest losses every `every_n_steps` batches and before every checkpoint save.

    A check reads one number from the device, so it runs at an interval rather than every step.
    Raising in `on_save_checkpoint` aborts that save: `last.ckpt` keeps the last finite weights.
    Under DDP the decision is reduced across ranks (every rank checks at the same steps): when one
    rank's losses diverge, all stop together instead of leaving the others waiting in a collective.
    """

    def __init__(self, every_n_steps: int = 50, min_loss_scale: float = 2.0**-8) -> None:
        super().__init__()
        self.every = every_n_steps
        self.min_loss_scale = min_loss_scale
        self._latest: dict[str, Tensor] = {}

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        self._latest.update({k: v for k, v in (outputs or {}).items() if k.endswith("_loss")})
        if (batch_idx + 1) % self.every == 0:
            self.check(trainer, pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.check(trainer, pl_module, saving=True)

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule, saving: bool = False) -> None:
        """Raise FloatingPointError naming the loss, the step and what to try (on every rank, or on none)."""
        if not self._latest:
            return
        names = list(self._latest)
        finite = torch.isfinite(torch.stack([self._latest[k].float() for k in names])).tolist()
        bad = [f"train/{k}" for k, ok in zip(names, finite, strict=True) if not ok]
        if not trainer.strategy.reduce_boolean_decision(bool(bad), all=False):  # any rank
            return
        what = f"{' and '.join(bad)} became non-finite" if bad else "another rank's losses became non-finite"
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
        if scaler is not None and scaler.is_enabled():
            scale = scaler.get_scale()
            if scale < self.min_loss_scale:
                what += f" and the fp16 loss scale fell to {scale:.3g} (every step overflows)"
            elif saving and not weights_finite(pl_module):
                what += " and so did the weights"
            else:
                return  # an fp16 overflow: the scaler skipped the step and lowered its scale
        raise FloatingPointError(
            f"{what} by generator step {pl_module.g_steps} "
            f"(epoch {trainer.current_epoch}); training stopped and no checkpoint was written "
            "with these weights. Resume from the last checkpoint with lower learning rates "
            "(model.g_optimizer.lr, model.d_optimizer.lr) or gradient clipping (model.d_clip_norm)."
        )


def weights_finite(module: torch.nn.Module) -> bool:
    """Whether every parameter is finite (one device sync)."""
    norms = [torch.linalg.vector_norm(p.detach().float()) for p in module.parameters()]
    return not norms or bool(torch.isfinite(torch.stack(norms)).all())
