"""The SLURM path's own logic: what to request for a job, and what to tell the user when SLURM says no."""

from __future__ import annotations

GPU_ACCELERATORS = ("gpu", "cuda", "auto")  # auto: a cluster's compute nodes are assumed to have GPUs

# sbatch's error -> the settings that decide it (the first match names them in the message)
_ADVICE = (
    ("gres", "hydra.launcher.gpus_per_node (null for CPU jobs; it follows trainer.accelerator=cpu)"),
    ("invalid partition", "hydra.launcher.partition (sinfo lists the partitions)"),
    ("node configuration is not available", "hydra.launcher.cpus_per_task, hydra.launcher.mem_gb, "
     "trainer.devices (tasks per node) or trainer.num_nodes: more than a node of this partition has"),
    ("time limit", "hydra.launcher.timeout_min (the partition's MaxTime: sinfo -o '%P %l')"),
    ("account", "hydra.launcher.account"),
    ("qos", "hydra.launcher.qos"),
    ("memory", "hydra.launcher.mem_gb"),
)  # fmt: skip


def whole(value) -> int:
    """A count the launcher's typed config accepts: the value, or 1 in place of `auto` / a list, which
    hydra_callbacks.SweepStart then refuses with its message before any job is submitted."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


def gpus_per_node(accelerator: str, devices) -> int | None:
    """GPUs to request per node: trainer.devices where the accelerator uses GPUs, none for CPU jobs."""
    if not isinstance(devices, int) or isinstance(devices, bool):  # auto, a list: refused at start (hydra_callbacks)
        return None
    return devices if str(accelerator).lower() in GPU_ACCELERATORS else None


def cpus_per_task(accelerator: str) -> int:
    """CPU cores per task: 8 to feed a GPU (data loading), 2 for a CPU task (raise it for more threads)."""
    return 8 if str(accelerator).lower() in GPU_ACCELERATORS else 2


def sbatch_message(stderr: str) -> str:
    """One line for a submission SLURM refused: sbatch's own error and the setting to change."""
    lines = [line.strip() for line in stderr.splitlines() if "sbatch: error" in line]
    error = lines[-1] if lines else stderr.strip().splitlines()[-1]
    key = next((advice for pattern, advice in _ADVICE if pattern in error.lower()), None)
    fallback = "check the hydra.launcher settings (the sbatch script is in the sweep's .submitit folder)"
    change = f"change {key}" if key else fallback
    return f"gankit: error: SLURM refused the job ({error}): {change}"
