"""Fixed-noise sample grids (scatters for 2D data): a PNG in the run directory and an image in every logger."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from torch import Tensor
from torchvision.utils import make_grid, save_image

from gankit.lightning_compat import logger_step


def image_grid(samples: Tensor, nrow: int = 8) -> Tensor:
    """Generated images [N, C, H, W] in [-1, 1] as one RGB grid [3, H', W'] in [0, 1]."""
    return make_grid(samples.float().cpu(), nrow=nrow, normalize=True, value_range=(-1, 1), padding=2)


def log_image(logger: Logger, key: str, grid: Tensor, step: int, progress: dict | None = None) -> None:
    """Send a [3, H, W] float grid in [0, 1] to a logger, whichever kind it is (CSV takes none).

    `progress` ({"g_step": ..., "kimg": ...}) goes with the image to W&B, whose panels plot against it."""
    if isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(key, grid, global_step=step)
    elif isinstance(logger, WandbLogger):
        import wandb

        logger.log_metrics({key: wandb.Image(grid.permute(1, 2, 0).numpy()), **(progress or {})}, step=step)
    elif hasattr(logger, "log_image"):  # NeptuneLogger, ...
        logger.log_image(key=key, images=[grid.permute(1, 2, 0).numpy()], step=step)


class SampleGrid(L.Callback):
    """Every `every_n_g_steps` generator steps (and at the start and end) draw the same latents.

    The latents are drawn once from `seed` and stored in checkpoints, so a resumed run keeps
    showing the same samples. Files: `<dirpath>/g_step_<steps>.png`; logged as `samples/grid`.
    `every_n_g_steps=None` picks by data: every 200 steps for images, every 1,000 for 2D points
    (a 2D step takes milliseconds and a scatter tens of them: at 200 the picture would cost more
    than the framework's whole step overhead, and a 15,000-step run would leave 75 of them).
    """

    EVERY = {"images": 200, "points": 1000}

    def __init__(
        self,
        dirpath: str,
        every_n_g_steps: int | None = None,
        num_samples: int = 64,
        nrow: int = 8,
        seed: int = 0,
        ema: bool = True,
    ) -> None:
        super().__init__()
        if (every_n_g_steps is not None and every_n_g_steps < 1) or num_samples < 1:
            raise ValueError("callbacks.samples.every_n_g_steps (null: by data) and num_samples must be at least 1")
        self.dirpath, self.every, self.nrow, self.ema = Path(dirpath), every_n_g_steps, nrow, ema
        self.num_samples, self.seed = num_samples, seed
        self.fixed_z: Tensor | None = None
        self._last_written = -1

    def state_dict(self) -> dict:
        return {"fixed_z": self.fixed_z}

    def load_state_dict(self, state_dict: dict) -> None:
        self.fixed_z = state_dict["fixed_z"]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every is None:
            self.every = self.EVERY["points" if getattr(trainer.datamodule, "points", False) else "images"]
        if self.fixed_z is None:
            self.fixed_z = pl_module.sample_latent(self.num_samples, torch.Generator().manual_seed(self.seed)).cpu()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.g_steps == 0:
            self.write(trainer, pl_module)  # what the untrained generator makes

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if pl_module.g_steps % self.every == 0:
            self.write(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer, pl_module)

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Path | None:
        """Save and log the grid for the current generator step, once per step, on rank 0."""
        step = pl_module.g_steps
        if step == self._last_written or not trainer.is_global_zero:
            return None
        self._last_written = step
        samples = pl_module.sample(self.fixed_z, ema=self.ema).float().cpu()  # [N, C, H, W] in [-1, 1]
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / f"g_step_{step:07d}.png"
        if samples.ndim == 2:  # 2D points: a scatter over the data's modes
            from gankit.plots import mixture_scatter

            dm = trainer.datamodule
            grid = mixture_scatter(samples, dm.means, dm.std, f"generator step {step}", path)
        else:
            grid = image_grid(samples, self.nrow)
            save_image(grid, path)
        progress = {"g_step": step, "kimg": round(pl_module.kimg, 3)}
        for logger in trainer.loggers:
            log_image(logger, "samples/grid", grid, logger_step(trainer), progress)
        return path
