"""Checkpoint files: written atomically, read safely, found for resuming, and turned back into a GANModule.

- `AtomicCheckpointIO` (a Lightning CheckpointIO plugin, on in every trainer config) writes a
  checkpoint to a temporary file beside its destination, fsyncs it and renames it over the
  destination, so a process killed mid-save leaves the previous file whole. (Lightning's own
  write goes through a temporary file in $TMPDIR and `shutil.move`, a copy when $TMPDIR is on
  another file system, without fsync.)
- `read_checkpoint` loads with `weights_only=True` (a shared file cannot run code) and turns a
  truncated, corrupt or foreign file into one message naming it.
- `resumable_checkpoint` picks the newest loadable checkpoint of a run directory (`ckpt_path=auto`).
(`lightning_compat.keep_epoch_position` makes a checkpoint saved at an epoch's end, or after `g_steps`
cut an epoch short, resume where the run stopped, as one saved mid-epoch does: it rewrites Lightning's
loop state, so it lives with Lightning's other private parts.)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
REQUIRED_KEYS = ("state_dict", "global_step", "loops")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: the message names it and says why."""


def read_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """A gankit (Lightning) checkpoint as a dict, loaded with weights_only=True; CheckpointError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={path} is not a file. Point it at a .ckpt in a run's checkpoints/ folder.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated zip, random bytes, a pickle with code in it, ...
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        if "Weights only load failed" in reason:  # torch's text is about its own defaults, not this file
            reason = "it holds objects other than tensors and plain values (a pickle that could run code)"
        raise CheckpointError(
            f"ckpt_path={path} is not a readable checkpoint ({type(error).__name__}: {reason}): the file is "
            "truncated, corrupt or not a gankit checkpoint. Use another of the run's checkpoints/ (last.ckpt, "
            "g_step_*.ckpt), or ckpt_path=auto to take the newest readable one."
        ) from error
    missing = [key for key in REQUIRED_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"ckpt_path={path} is not a gankit training checkpoint (it has no {', '.join(missing)}); "
            "point it at a run's checkpoints/last.ckpt."
        )
    return checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch.save checkpoint IO, with atomic local writes and weights_only reads."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if "://" in str(path):  # remote file systems: fsspec's own transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)  # atomic on one file system: readers see the old file or the new one
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)  # the rename itself survives a crash
            finally:
                os.close(directory)
        finally:
            tmp.unlink(missing_ok=True)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        if "://" in str(path):
            return super().load_checkpoint(path, map_location, weights_only=True)
        return read_checkpoint(path, map_location if map_location is not None else "cpu")


def resumable_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest checkpoint in `checkpoint_dir` that loads; None if none does.

    An unreadable one is renamed `<name>.unreadable` (kept, with a warning), so that the resumed run
    writes a fresh `last.ckpt` rather than Lightning's `last-v1.ckpt` beside a broken one.
    """
    candidates = sorted(
        (p for p in Path(checkpoint_dir).glob("*.ckpt") if p.name != "best.ckpt"),
        key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt"),
        reverse=True,
    )
    for path in candidates:
        try:
            read_checkpoint(path)
        except CheckpointError as error:
            aside = path.with_name(path.name + ".unreadable")
            os.replace(path, aside)
            cause = type(error.__cause__ or error).__name__
            log.warning("ckpt_path=auto: %s is unreadable (%s), moved aside to %s", path.name, cause, aside.name)
            continue
        return path
    return None


def check_fits(module: torch.nn.Module, checkpoint: dict, path: str | Path) -> None:
    """The checkpoint's weights are this model's: the same names and shapes (else one message naming the file)."""
    have = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    saved = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items()}
    wrong = sorted(set(have) ^ set(saved)) + sorted(k for k in set(have) & set(saved) if have[k] != saved[k])
    if wrong:
        raise CheckpointError(
            f"ckpt_path={path} holds another model's weights ({len(wrong)} tensors differ, e.g. "
            f"{', '.join(wrong[:3])}): use it with the model overrides of the run that wrote it."
        )


class RunConfig(L.Callback):
    """Stores the run's composed config (unresolved, as .hydra/config.yaml holds it) in every checkpoint:
    eval.py and generate.py rebuild the model from the checkpoint itself, whatever happened to the folder."""

    def __init__(self, config: dict) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["gankit_config"] = self.config


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
    checkpoint = read_checkpoint(ckpt_path)
    saved = checkpoint.get("gankit_config")  # the config the weights were trained with (older files: the folder's)
    cfg = OmegaConf.create(saved) if saved else run_config(ckpt_path)
    cfg.paths = paths
    module = instantiate(cfg.model)
    check_fits(module, checkpoint, ckpt_path)
    module.load_state_dict(checkpoint["state_dict"])
    module.to(device).eval()
    return cfg, module, checkpoint["global_step"] // (module.n_critic + 1)


def pick_device(name: str) -> torch.device:
    """`auto`: CUDA when available, else the CPU; anything else as torch names it (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device={name!r} is not a device: use auto, cpu, cuda or cuda:N") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name} but this machine has no CUDA device: use device=cpu (or auto)")
    return device
