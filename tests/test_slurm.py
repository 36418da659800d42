"""`hydra/launcher=slurm` on a real SLURM: a two-node cluster on this machine (tests/slurm_cluster.py).

Skipped with the reason where the SLURM and munge binaries are missing or the tests do not run as root
(`scripts/system_packages.sh`, called by `.ci/run`, installs them from Debian's packages)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch

from gankit.runs import find_jobs
from tests import slurm_cluster
from tests.conftest import ROOT, run_cli

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
    cluster.stop()  # its jobs cancelled (nothing of a failed test keeps running), its daemons stopped


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
    if not slurm_cluster.nodes_resolve():
        pytest.skip("n1 / n2 do not resolve and /etc/hosts is read-only: a 2-node rendezvous would hang")
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
                    "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", f"hydra.sweep.dir={sweep}",
                    "hydra.sweeper.pruner=null")  # fmt: skip
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


# ---- preemption on a real scheduler ---------------------------------------------------------------------
LONG = ["trainer.accelerator=cpu", "g_steps=300", "metrics.evaluation.every_n_g_steps=25",
        "callbacks.samples.every_n_g_steps=100", "seed=3", "ckpt_path=auto"]  # fmt: skip


def _wait(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _log(run: Path) -> str:
    return (run / "debug.log").read_text(errors="replace") if (run / "debug.log").is_file() else ""


def _start_sweep(cluster, sweep: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", **cluster.env}
    command = [sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=slurm", *TINY, *LONG, *args,
               f"hydra.sweep.dir={sweep}"]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _running_job(cluster) -> str:
    result = cluster.run("squeue", "-h", "-t", "RUNNING", "-o", "%i", check=False)
    return result.stdout.split()[0] if result.stdout.split() else ""


def _weights(run: Path) -> dict:
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return {**state["state_dict"], "g_steps": torch.tensor(state["loops"]["fit_loop"]["epoch_loop.state_dict"].get(
        "_batches_that_stepped", 0))}  # fmt: skip


@pytest.mark.slow  # about a minute (two scheduler round trips and a straight run): make test-all
def test_a_time_limit_signal_requeues_within_the_budget_and_the_resumed_run_ends_like_a_straight_one(cluster, tmp_path):
    """USR2 (SLURM's time-limit warning, sent by scancel here) saves and requeues once (max_num_timeout=1); the second
    USR2 finds the budget spent: the job ends with its checkpoint and the command that continues it, which finishes
    with the weights of a run that was never stopped."""
    straight = tmp_path / "straight"
    result = _slurm(cluster, *LONG, f"hydra.sweep.dir={straight}")
    assert result.returncode == 0, result.stderr[-3000:]

    sweep, run = tmp_path / "preempted", tmp_path / "preempted" / "0"
    process = _start_sweep(cluster, sweep, "hydra.launcher.max_num_timeout=1")

    def evaluated_in_session(n: int) -> bool:  # the n-th session (start or resume) has evaluated once
        sessions = _log(run).split("] - Run directory: ")
        return len(sessions) > n and "Evaluation at generator step" in sessions[n]

    try:
        _wait(lambda: evaluated_in_session(1), 120, "the first evaluation")
        job = _wait(lambda: _running_job(cluster), 60, "the running job")
        cluster.run("scancel", "--signal=USR2", job)
        _wait(lambda: "requeue 1 of 1 allowed" in _log(run), 60, "the requeue")
        # SLURM holds a requeued job (BeginTime, about 2 minutes): release it once the first run has left its node
        # (released while the node still cleans up, the job is killed: "Job credential revoked")
        _wait(lambda: cluster.run("squeue", "-h", "-t", "PENDING", "-o", "%i", check=False).stdout.strip()
              and cluster.idle_nodes() == {"n1", "n2"}, 120, "the requeued job pending on idle nodes")  # fmt: skip
        time.sleep(2)
        cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now")
        _wait(lambda: evaluated_in_session(2), 180, "the requeued job to resume")
        cluster.run("scancel", "--signal=USR2", _wait(lambda: _running_job(cluster), 60, "the requeued job"))
        process.communicate(timeout=120)
    finally:
        process.kill()
    text = _log(run)
    assert "requeue budget spent: 1 of hydra.launcher.max_num_timeout=1" in text, text[-3000:]
    assert process.returncode != 0
    resume = text.split("Resume with: ", 1)[1].splitlines()[0].split()
    assert resume[:4] == ["python", "train.py", "-m", "hydra/launcher=slurm"] and "ckpt_path=auto" in resume
    # the command the message gives, run as a user would: it finishes the run in the same folder
    again = run_cli(*resume[2:], env=cluster.env, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert text.count("] - Done: ") == 0 and "] - Done: 300 generator" in _log(run)  # stopped twice, then done
    mine, reference = _weights(run), _weights(straight / "0")
    assert mine.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(mine[key], value), key


@pytest.mark.slow
def test_scancel_stops_a_running_job_with_a_checkpoint_of_its_step(cluster, tmp_path):
    sweep, run = tmp_path / "sweep", tmp_path / "sweep" / "0"
    process = _start_sweep(cluster, sweep)
    try:
        _wait(lambda: "Evaluation at generator step" in _log(run), 120, "the first evaluation")
        cluster.run("scancel", _wait(lambda: _running_job(cluster), 60, "the running job"))
        process.communicate(timeout=120)
    finally:
        process.kill()
    text = _log(run)
    assert "Received SIGTERM: finishing this step, then saving a checkpoint" in text, text[-2000:]
    assert "Preempted: stopped by SIGTERM at generator step" in text and "Resume with: python train.py" in text
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert find_jobs(sweep)[0].status == "preempted"
