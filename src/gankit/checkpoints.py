"""Rebuild a trained GANModule from a checkpoint and the config of the run that wrote it."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


def run_config(ckpt_path: Path) -> DictConfig:
    """The training config of the run that wrote `ckpt_path` (`<run>/.hydra/config.yaml`)."""
    candidates = [parent / ".hydra" / "config.yaml" for parent in ckpt_path.resolve().parents[:3]]
    for path in candidates:
        if path.is_file():
            return OmegaConf.load(path)
    raise FileNotFoundError(
        f"no training config found for {ckpt_path}: looked for {', '.join(map(str, candidates))}. "
        "Checkpoints are read inside a gankit run directory (<run>/checkpoints/*.ckpt)."
    )


def load_module(
    ckpt_path: str | Path, paths: DictConfig, device: torch.device
) -> tuple[DictConfig, L.LightningModule, int]:
    """(the run's config, its GANModule with the checkpoint's weights in eval mode on `device`, generator step).

    `paths` (the calling job's) replaces the run's, so that anything the run's config interpolates
    from them (output and cache folders) points at the calling job.
    """
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path} is not a file. Point it at a run's checkpoints/*.ckpt.")
    cfg = run_config(ckpt_path)
    cfg.paths = paths
    module = instantiate(cfg.model)
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    module.load_state_dict(checkpoint["state_dict"])
    module.to(device).eval()
    return cfg, module, checkpoint["global_step"] // (module.n_critic + 1)


def pick_device(name: str) -> torch.device:
    """`auto`: CUDA when available, else the CPU; anything else as torch names it."""
    return torch.device(name if name != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
