"""Ranks are visible: which process this is, files named per rank, and DDP inside a Hydra multirun.

Lightning's DDP launcher starts ranks > 0 by running the script again with `sys.argv` (plus the
run directory). Inside `python train.py -m ...` that is the whole sweep: each child would start
its own sweep in its own folder, and with a sweeper that samples (Optuna) train another config
than its rank 0. `relaunch_job_only` makes the children run exactly the current job instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

_LAUNCH_VARIABLES = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")


def process_rank() -> int:
    """This process's global rank as the launcher said it (0 when not launched as a rank)."""
    if "RANK" in os.environ:  # torchrun, submitit's TorchDistributedEnvironment
        return int(os.environ["RANK"])
    if "SLURM_NTASKS" in os.environ and "SLURM_PROCID" in os.environ:  # srun
        return int(os.environ["SLURM_PROCID"])
    if "LOCAL_RANK" in os.environ:  # Lightning's own launcher: node and local rank only (unique, if not dense)
        return int(os.environ.get("NODE_RANK", 0)) * 1000 + int(os.environ["LOCAL_RANK"])
    return 0


def adopt_launcher_ranks() -> None:
    """Under submitit's local executor with several tasks per job, tell torch and Lightning each task's rank
    (on SLURM, Lightning reads them from SLURM itself): then Lightning starts no process of its own."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "local" or "LOCAL_RANK" in os.environ:
        return
    import submitit

    if submitit.JobEnvironment().num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        os.environ.setdefault("NODE_RANK", "0")


def per_rank(path: Path, rank: int | None = None) -> Path:
    """`train.log` on rank 0, `train.rank1.log` on rank 1: each process writes its own file."""
    rank = process_rank() if rank is None else rank
    return path if rank == 0 else path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def log_files_per_rank() -> None:
    """Move the root logger's file handlers (Hydra's `<task>.log`) to per-rank files on ranks > 0."""
    rank = process_rank()
    if rank == 0:
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and not Path(handler.baseFilename).stem.endswith(f".rank{rank}"):
            own = logging.FileHandler(per_rank(Path(handler.baseFilename), rank), mode=handler.mode)
            own.setFormatter(handler.formatter)
            own.setLevel(handler.level)
            root.removeHandler(handler)
            handler.close()
            root.addHandler(own)


def job_command(argv: list[str], task_overrides: list[str]) -> list[str]:
    """This job alone as a command line: the script, its config flags, the job's overrides (no `-m`)."""
    kept, i = [argv[0]], 1
    while i < len(argv):
        arg = argv[i]
        if arg.split("=", 1)[0] in _CONFIG_FLAGS:
            kept.append(arg)
            if "=" not in arg and i + 1 < len(argv):
                kept.append(argv[i + 1])
                i += 1
        i += 1
    return [*kept, *task_overrides, "hydra.mode=RUN"]


@contextlib.contextmanager
def relaunch_job_only(spawns_ranks: bool) -> Iterator[None]:
    """In a Hydra multirun where Lightning will start the other ranks itself: while this is open,
    those ranks run this job's overrides in this job's directory, not the sweep again.

    Only a job that runs in the process that read the command line can be relaunched this way
    (Hydra's basic launcher); under other launchers the launcher must start one process per device.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import read_write

    if not spawns_ranks or not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        yield
        return
    hc = HydraConfig.get()
    import __main__

    if (
        getattr(__main__, "__spec__", None) is not None
        or Path(sys.argv[0]).resolve() != Path(getattr(__main__, "__file__", "")).resolve()
    ):
        raise ValueError(
            f"DDP with trainer.devices > 1 inside a multirun under the {hc.runtime.choices.get('hydra/launcher')} "
            "launcher: Lightning cannot start the other ranks from here. Let the launcher start one process per "
            "device (hydra/launcher=local or hydra/launcher=slurm), or run the sweep's jobs one by one without -m."
        )
    argv, run_dir = sys.argv, hc.run.dir
    environment = {key: os.environ.get(key) for key in _LAUNCH_VARIABLES}
    sys.argv = job_command(argv, list(hc.overrides.task))
    with read_write(hc):
        hc.run.dir = hc.runtime.output_dir  # Lightning passes hydra.run.dir=<this> to the children
    try:
        yield
    finally:  # the next job starts its own ranks: forget this job's process group and launch variables
        sys.argv = argv
        with read_write(hc):
            hc.run.dir = run_dir
        import torch.distributed

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in environment.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
