"""What Hydra runs in the process that launches a sweep, before any job starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepStart(Callback):
    """Makes the sweep directory (the Optuna sweeper opens its SQLite study there before any job runs) and
    checks a cluster launcher's settings, which come from the trainer's (tasks and GPUs per node =
    trainer.devices, nodes = trainer.num_nodes): values it cannot turn into a job end the sweep here."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        launcher = str(config.hydra.launcher.get("_target_", ""))
        if not launcher.endswith(("SlurmLauncher", "LocalLauncher")):  # submitit's, or gankit's over it
            return
        devices, nodes = config.trainer.get("devices"), config.trainer.get("num_nodes", 1)
        bad = [f"trainer.devices={devices!r}"] if not _positive_int(devices) else []
        bad += [f"trainer.num_nodes={nodes!r}"] if not _positive_int(nodes) else []
        if "SlurmLauncher" not in launcher and _positive_int(nodes) and nodes > 1:
            bad.append(f"trainer.num_nodes={nodes} (hydra/launcher=local runs on this machine only)")
        if bad:
            raise SystemExit(
                f"gankit: error: {' and '.join(bad)} cannot be turned into a job: the launcher starts "
                "trainer.devices tasks on each of trainer.num_nodes nodes, so both must be whole numbers >= 1 "
                "(e.g. trainer.devices=4 trainer.num_nodes=2)."
            )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
