"""`hydra/launcher=slurm` on a real SLURM: a two-node cluster on this machine (tests/slurm_cluster.py).

Skipped with the reason where the SLURM and munge binaries are missing or the tests do not run as root
(`scripts/system_packages.sh`, called by `.ci/run`, installs them from Debian's packages)."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests import slurm_cluster
from tests.conftest import run_cli

TINY = ["debug=fast", "metrics.evaluation.num_samples=32", "hydra.launcher.partition=cpu"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    absent = slurm_cluster.missing()
    if absent:
        pytest.skip(f"SLURM binaries missing: {', '.join(absent)} (Debian: slurmctld slurmd slurm-client munge)")
    if os.geteuid() != 0:
        pytest.skip("the test cluster's daemons run as root (SlurmUser=root)")
    started = time.monotonic()
    cluster = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    cluster.start_seconds = time.monotonic() - started
    yield cluster
    for job in cluster.jobs():  # nothing of a failed test keeps running
        cluster.run("scancel", job, check=False)
    cluster.stop()


def _slurm(cluster, *args: str, timeout: int = 300):
    return run_cli("-m", "hydra/launcher=slurm", *TINY, *args, env=cluster.env, timeout=timeout)


def _span(run_dir: Path, name: str = "debug.log") -> tuple[datetime, datetime]:
    lines = [line for line in (run_dir / name).read_text().splitlines() if line.startswith("[20")]
    return tuple(datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f") for line in (lines[0], lines[-1]))


def _overlap(*runs: Path) -> bool:
    spans = [_span(run) for run in runs]
    return max(start for start, _ in spans) < min(end for _, end in spans)


def test_the_cluster_starts_with_two_idle_cpu_nodes(cluster):
    assert cluster.idle_nodes() == {"n1", "n2"}
    assert cluster.start_seconds < 60


def test_a_cpu_ddp_job_of_two_tasks_asks_for_no_gpu_and_trains_over_srun(cluster, tmp_path):
    sweep = tmp_path / "sweep"
    result = _slurm(cluster, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    (script,) = sweep.glob(".submitit/*/*_submission.sh")
    text = script.read_text()
    assert "--gpus-per-node" not in text and "#SBATCH --ntasks-per-node=2" in text and "--cpus-per-task=2" in text
    for log_file, rank in (("debug.log", 0), ("debug.rank1.log", 1)):
        log_text = (sweep / "0" / log_file).read_text()
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in log_text and "] - Done: " in log_text
    assert (sweep / "0" / "checkpoints" / "last.ckpt").is_file()


def test_a_two_node_job_has_one_rank_on_each_node(cluster, tmp_path):
    sweep = tmp_path / "sweep"
    result = _slurm(cluster, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=2",
                    f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (script,) = sweep.glob(".submitit/*/*_submission.sh")
    assert "#SBATCH --nodes=2" in script.read_text()
    for log_file, rank in (("debug.log", 0), ("debug.rank1.log", 1)):
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in (sweep / "0" / log_file).read_text()
    logs = " ".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.out"))
    assert "node=0(2), global_rank=0(2)" in logs and "node=1(2), global_rank=1(2)" in logs  # submitit's task view


def test_a_sweep_runs_its_jobs_at_once(cluster, tmp_path):
    sweep = tmp_path / "sweep"
    result = _slurm(cluster, "trainer.accelerator=cpu", "g_steps=40", "model.loss=hinge,least_squares",
                    f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert _overlap(sweep / "0", sweep / "1")


def test_optuna_on_slurm_runs_trials_at_once_on_a_journal_file(cluster, tmp_path):
    import optuna

    from gankit.sweeps import open_storage

    sweep = tmp_path / "sweep"
    result = _slurm(cluster, "hparams_search=optuna", "trainer.accelerator=cpu", "g_steps=40", "logger=csv",
                    "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="debug", storage=open_storage(str(sweep / "optuna.journal")))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert all(t.intermediate_values for t in study.trials)  # each job reported from its node
    assert _overlap(sweep / "trial_0", sweep / "trial_1")


@pytest.mark.parametrize(
    "args, message",
    [
        (["hydra.launcher.partition=nowhere"], "change hydra.launcher.partition"),
        (["hydra.launcher.gpus_per_node=2"], "change hydra.launcher.gpus_per_node"),
    ],
    ids=["unknown-partition", "gpus-on-a-cpu-cluster"],
)
def test_a_submission_slurm_refuses_is_one_message(cluster, tmp_path, args, message):
    result = _slurm(cluster, "trainer.accelerator=cpu", f"hydra.sweep.dir={tmp_path / 'sweep'}", *args)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("gankit: error: SLURM refused the job (sbatch: error:") and message in last, last
    assert "Traceback" not in result.stderr
