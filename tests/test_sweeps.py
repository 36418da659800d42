"""Sweeps that search (Optuna), sweeps on local processes (submitit), and what SLURM sees, without a cluster."""

from __future__ import annotations

import csv
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import CONF, ROOT, make_cfg, run_cli

TINY = ["debug=fast", "metrics.evaluation.num_samples=32"]


def _best_fid(job_dir: Path) -> float:
    with open(job_dir / "csv" / "metrics.csv") as f:
        return min(float(r["val/fid"]) for r in csv.DictReader(f) if r.get("val/fid"))


def _fids_by_step(job_dir: Path) -> dict[int, float]:
    with open(job_dir / "csv" / "metrics.csv") as f:
        return {int(r["g_step"]): float(r["val/fid"]) for r in csv.DictReader(f) if r.get("val/fid")}


def test_optuna_sweep_returns_the_best_evaluation_and_continues_its_study(tmp_path):
    import optuna

    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "hparams_search=optuna",
        *TINY,
        f"hydra.sweep.dir={sweep}",
        "hydra.sweeper.pruner=null",  # both trials run to the end (pruning: tests/test_search.py)
    ]
    result = run_cli(*args, "hydra.sweeper.n_trials=2", timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna" and "model.loss" in results["best_params"]
    study = optuna.load_study(study_name="debug", storage=f"sqlite:///{sweep / 'optuna.db'}")
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for trial in trials:  # the objective is the run's best val/fid, read back from its own metrics.csv
        assert trial.value == pytest.approx(_best_fid(sweep / f"trial_{trial.number}"), rel=1e-6)
        # every evaluation was reported to the trial, at its generator step
        assert trial.intermediate_values == pytest.approx(_fids_by_step(sweep / f"trial_{trial.number}"))
    first_run = sorted(p.name for p in (sweep / "trial_0" / "checkpoints").iterdir())
    assert yaml.safe_load((sweep / "study.yaml").read_text())["storage"] == "sqlite:///optuna.db"  # movable
    moved = tmp_path / "moved"
    sweep.rename(moved)  # the same sweep directory, elsewhere: the same study, from its own optuna.db
    args[args.index(f"hydra.sweep.dir={sweep}")] = f"hydra.sweep.dir={moved}"
    again = run_cli(*args, "hydra.sweeper.n_trials=1", timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    study = optuna.load_study(study_name="debug", storage=f"sqlite:///{moved / 'optuna.db'}")
    assert len(study.trials) == 3 and not sweep.exists()
    # the continued study's trial 2 writes into trial_2, not into the first trials' directories
    assert (moved / "trial_2" / "checkpoints" / "last.ckpt").is_file()
    assert sorted(p.name for p in (moved / "trial_0" / "checkpoints").iterdir()) == first_run


def test_multi_objective_is_one_override_away(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "hparams_search=optuna_fid_recall", *TINY, f"hydra.sweep.dir={sweep}",
                     "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.population_size=2", timeout=400)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["solutions"] and all(len(s["values"]) == 2 for s in results["solutions"])


def test_a_search_on_a_metric_the_run_does_not_log_fails_at_start(tmp_path):
    result = run_cli("-m", "hparams_search=optuna", "debug=fast", "metrics=none", f"hydra.sweep.dir={tmp_path}",
                     "hydra.sweeper.n_trials=1")  # fmt: skip
    assert result.returncode != 0
    assert "optimized_metric=val/fid is not logged by this run's metrics" in result.stderr
    assert not list(tmp_path.glob("trial_*"))  # said by the sweeper, before any trial
    assert not list(tmp_path.glob("*/checkpoints/*.ckpt"))


def test_local_launcher_runs_the_jobs_as_parallel_processes(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "hydra/launcher=local", "debug=fast", "metrics=none", "model.loss=hinge,least_squares",
                     f"hydra.sweep.dir={sweep}", timeout=400)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
    logs = sorted((sweep / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2  # each job ran in its own process


def _launcher(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_slurm_preset_writes_the_sbatch_script_the_cluster_needs(tmp_path, monkeypatch):
    """tasks and GPUs per node = trainer.devices, nodes = trainer.num_nodes, the time-limit signal, srun."""
    import submitit
    from omegaconf import OmegaConf

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\n")  # submitit looks for srun before it writes a script
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")

    cluster = ["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", "hydra.launcher.partition=gpu"]
    cfg = _launcher("hydra/launcher=slurm", *cluster, "hydra.launcher.account=lab", f"hydra.sweep.dir={tmp_path}")
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    # as hydra-submitit-launcher's SlurmLauncher.launch turns its config into an executor
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    executor = submitit.AutoExecutor(
        folder=tmp_path / "submitit", cluster="slurm", slurm_max_num_timeout=params["max_num_timeout"]
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    init_keys = {"_target_", "submitit_folder", "max_num_timeout"}
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items() if k not in init_keys})
    text = executor._executor._make_submission_file_text("python -u train.py", "uid")
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --signal=USR2@120", "#SBATCH --partition=gpu", "#SBATCH --account=lab",
                 "#SBATCH --time=1440", "#SBATCH --open-mode=append"):  # fmt: skip
        assert line in text, line
    assert "srun" in text and "python -u train.py" in text
    (tmp_path / "sbatch_example.sh").write_text(text)


def test_under_srun_lightning_takes_world_size_and_rank_from_slurm(monkeypatch, tmp_path):
    from hydra.utils import instantiate
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    slurm = {"SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4", "SLURM_PROCID": "5", "SLURM_LOCALID": "1",
             "SLURM_NODEID": "1", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train"}  # fmt: skip
    monkeypatch.setenv("SLURM_NODELIST", "gpu[01-02]")
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 0)  # the Trainer below sets it to 5: restored for later tests
    cfg = make_cfg(tmp_path, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=4", "trainer.num_nodes=2")
    trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    environment = trainer._accelerator_connector.cluster_environment
    assert isinstance(environment, SLURMEnvironment) and environment.creates_processes_externally
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank, trainer.node_rank) == (8, 5, 1, 1)
    from gankit.ranks import process_rank

    assert process_rank() == 5


def test_the_time_limit_signal_saves_then_requeues_the_slurm_job(tmp_path):
    """SIGUSR1 under SLURM: the checkpoint is written first, then `scontrol requeue <job>` (a stand-in records it)."""
    bin_dir, record, run = tmp_path / "bin", tmp_path / "scontrol.txt", tmp_path / "run"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    saved = f"$(test -f {run}/checkpoints/last.ckpt && echo yes || echo no)"
    scontrol.write_text(f'#!/bin/sh\necho "$@ checkpoint_exists={saved}" >> {record}\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "WANDB_MODE": "disabled", "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}
    with open(tmp_path / "stderr.txt", "w") as err:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), "debug=fast", "g_steps=100000", "metrics=none",
             f"hydra.run.dir={run}", "callbacks.samples.every_n_g_steps=100000"],  # fmt: skip
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
        deadline = time.time() + 120
        while time.time() < deadline and not (run / "samples" / "g_step_0000000.png").is_file():
            time.sleep(0.5)  # training has started: the first grid is drawn at on_train_start
        time.sleep(1)
        process.send_signal(signal.SIGUSR1)
        process.wait(timeout=120)
    assert process.returncode == 128 + signal.SIGUSR1, (tmp_path / "stderr.txt").read_text()[-2000:]
    assert record.read_text().split() == ["requeue", "4242", "checkpoint_exists=yes"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["trainer.num_nodes=2"], "trainer.num_nodes=2 needs a launcher that starts the processes on every node"),
        (["-m", "hydra/launcher=slurm", "trainer.devices=auto"], "trainer.devices='auto' cannot be turned into a job"),
        (["-m", "hydra/launcher=local", "trainer.num_nodes=2"], "hydra/launcher=local runs on this machine only"),
    ],
    ids=["nodes-without-launcher", "slurm-devices-auto", "local-several-nodes"],
)
def test_cluster_settings_that_cannot_work_fail_at_start(tmp_path, args, message):
    result = run_cli(*args, "debug=fast", f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "sweep" / ".submitit").exists()  # nothing was submitted
