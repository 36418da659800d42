"""Periodic checkpoints that keep the disk bounded: `last.ckpt` and the newest `keep`, by epoch or generator step."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from gankit.lightning_compat import CheckpointCompat


class PeriodicCheckpoint(CheckpointCompat):
    """Lightning's ModelCheckpoint, named and counted in generator steps.

    Saves `g_step_<n>.ckpt` every `every_n_epochs` epochs, or every `every_n_g_steps` generator
    steps when that is set (for long epochs), keeps the newest `keep` of them (-1: all), updates
    `last.ckpt` at each save, and saves once more at the end of training (the run's final step).
    """

    def __init__(self, dirpath: str, every_n_epochs: int = 1, every_n_g_steps: int | None = None, keep: int = 3):
        if keep == 0 or keep < -1:
            raise ValueError(f"callbacks.model_checkpoint.keep must be >= 1, or -1 for all; got {keep}")
        if every_n_g_steps is not None and every_n_g_steps < 1:
            raise ValueError(f"callbacks.model_checkpoint.every_n_g_steps must be >= 1, or null; got {every_n_g_steps}")
        super().__init__(
            dirpath=dirpath,
            filename="g_step_{g_step:07d}",
            auto_insert_metric_name=False,
            monitor="g_step",  # the newest is the best: top-k keeps the newest k
            mode="max",
            save_top_k=keep,
            save_last=True,
            every_n_epochs=0 if every_n_g_steps else every_n_epochs,
            save_on_train_epoch_end=True,
        )
        self.every_n_g_steps = every_n_g_steps

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.every_n_g_steps:  # Lightning counts both optimizers' steps: n_critic D steps + 1 G step a cycle
            self.set_every_n_train_steps(self.every_n_g_steps * (pl_module.n_critic + 1))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # Resumed from this directory's last.ckpt, written by the preemption before this callback's first
        # save: it is this run's own, updated in place (Lightning would write last-v1.ckpt beside it and
        # leave the stale one as last.ckpt). Another run's files keep their version suffix.
        last = Path(self.dirpath or "") / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"
        if not self.last_model_path and trainer.ckpt_path and Path(trainer.ckpt_path).resolve() == last.resolve():
            self.last_model_path = str(last)

    def monitor_values(self, trainer: L.Trainer) -> dict:
        candidates = super().monitor_values(trainer)
        candidates["g_step"] = torch.tensor(trainer.lightning_module.g_steps)
        return candidates

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.last_saved_global_step != trainer.global_step and trainer.global_step > 0:
            self.save_top_k_now(trainer)
            self.save_last_now(trainer)
