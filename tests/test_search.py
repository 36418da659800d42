"""gankit's Optuna sweeper: pruning through the study's storage, failed trials, trial directories, parallel
trials on a journal file and on a real PostgreSQL server, and the settings it refuses before any trial."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from gankit import sweeps
from gankit.runs import find_jobs, wandb_summary
from gankit.sweeper import distribution, grid_choices
from tests.conftest import run_cli

TINY = ["debug=fast", "metrics.evaluation.num_samples=32", "logger=csv"]


def _load(storage: str, name: str = "debug"):
    import optuna

    return optuna.load_study(study_name=name, storage=sweeps.open_storage(storage))


def _span(run_dir: Path) -> tuple[datetime, datetime]:
    """When a run started and ended, from its console log's timestamps."""
    log_file = run_dir / "debug.log"  # <task_name>.log; debug=fast names the task debug
    lines = [line for line in log_file.read_text().splitlines() if line.startswith("[20")]
    stamp = [datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f") for line in (lines[0], lines[-1])]
    return stamp[0], stamp[1]


# ---- the search space and the pruner, against Optuna's own definitions ------------------------------------
def _dist(line: str):
    return distribution(OverridesParser.create().parse_overrides([line])[0])


def test_hydra_sweep_syntax_becomes_optuna_distributions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    assert _dist("a=choice(hinge, least_squares)") == CategoricalDistribution(["hinge", "least_squares"])
    assert _dist("a=tag(log, interval(1e-4, 1e-2))") == FloatDistribution(1e-4, 1e-2, log=True)
    assert _dist("a=interval(0.0, 1.0)") == FloatDistribution(0.0, 1.0)
    assert _dist("a=range(1, 8)") == IntDistribution(1, 7)  # integers: range (Hydra's intervals are floats)
    # range(a, b, s) gives what Hydra's grid sweeps give: the stop is excluded
    assert grid_choices(_dist("a=range(1, 8, 3)")) == [1, 4, 7] == list(range(1, 8, 3))
    assert grid_choices(_dist("a=range(1, 7, 3)")) == [1, 4]
    assert _dist("a=5") == "5"  # a fixed value


def test_pruner_warmup_is_counted_in_evaluations():
    import optuna

    median = sweeps.build_pruner({"name": "median", "warmup_evaluations": 2, "startup_trials": 5}, step_size=100)
    assert isinstance(median, optuna.pruners.MedianPruner)
    # Optuna prunes from step n_warmup_steps on: the evaluations at 100 and 200 are safe, the one at 300 is not
    assert (median._n_warmup_steps, median._n_startup_trials) == (201, 5)
    halving = sweeps.build_pruner({"name": "successive_halving", "warmup_evaluations": 3}, step_size=500)
    assert halving._min_resource == 2000  # its first rung: the first evaluation after the warm-up
    assert isinstance(sweeps.build_pruner(None, 100), optuna.pruners.NopPruner)


# ---- pruning, failures, trial directories, through the command line -----------------------------------------
def test_a_pruned_trial_stops_cleanly_and_the_study_records_it(tmp_path):
    """A threshold no FID can meet prunes every trial at its first evaluation after the warm-up (1 here)."""
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "hparams_search=optuna", *TINY, "logger=wandb", f"hydra.sweep.dir={sweep}",
                     "hydra.sweeper.n_trials=2", "g_steps=12", "metrics.evaluation.every_n_g_steps=2",
                     "hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.upper=0.0",
                     "hydra.sweeper.pruner.warmup_evaluations=1",
                     env={"WANDB_MODE": "offline"}, timeout=400)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]  # pruned is not failed: the sweep ends well
    study = _load(f"sqlite:///{sweep / 'optuna.db'}")
    for trial in study.trials:
        assert trial.state.name == "PRUNED"
        assert sorted(trial.intermediate_values) == [2, 4]  # reported at each evaluation, stopped after the 2nd
        run = sweep / f"trial_{trial.number}"
        assert trial.user_attrs["g_steps"] == 4
        assert "] - Pruned: trial" in (run / "debug.log").read_text()
        assert (run / "checkpoints" / "last.ckpt").is_file()  # stopped cleanly: the last checkpoint at step 4
        assert (run / "checkpoints" / "g_step_0000004.ckpt").is_file()
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["counts"] == {"complete": 0, "pruned": 2, "fail": 0}
    assert [t["pruned_at"] for t in results["trials"]] == [4, 4]
    assert [job.status for job in find_jobs(sweep)] == ["pruned", "pruned"]
    report = run_cli(str(sweep), "--static", script="report.py")
    assert report.returncode == 0, report.stderr[-2000:]
    page = (sweep / "report.html").read_text()
    assert "pruned at step 4" in page and "status-pruned" in page  # the study table and the job table
    for trial in study.trials:  # W&B: each run's summary has its trial and state; the workspace shows them
        (run_file,) = (sweep / f"trial_{trial.number}").glob("wandb/offline-run-*/*.wandb")
        summary = wandb_summary(run_file)
        assert (summary["trial/number"], summary["trial/state"]) == (trial.number, "PRUNED")
    layout = run_cli("wandb", "--entity", "e", "--project", "p", "--sweep-dir", str(sweep), "--dry-run",
                     script="dashboard.py")  # fmt: skip
    assert "summary:trial/state" in layout.stdout, layout.stderr[-2000:]


def test_a_kimg_cadence_reports_on_one_image_axis_for_every_batch_size(tmp_path):
    """With metrics.evaluation.every_n_kimg the trials report at images seen, rounded down to the cadence: trials
    of different batch sizes land on the same steps (the median pruner compares values at equal steps)."""
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "hparams_search=optuna", *TINY, f"hydra.sweep.dir={sweep}", "hydra/sweeper/sampler=grid",
                     "hydra.sweeper.params=null", "data.batch_size=choice(8, 12)", "model.n_critic=1", "g_steps=12",
                     "metrics.evaluation.every_n_kimg=0.024", "hydra.sweeper.pruner=null", timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    steps = {
        t.params["data.batch_size"]: sorted(t.intermediate_values)
        for t in _load(f"sqlite:///{sweep / 'optuna.db'}").trials
    }
    assert steps[8] == [24, 48, 72, 96]  # 12 steps x 8 images
    assert steps[12] == [24, 48, 72, 96, 120, 144]  # 12 steps x 12 images


def test_a_ddp_trial_is_pruned_on_every_rank(tmp_path):
    """Rank 0 asks the pruner; the rank Lightning starts learns the trial from the job and follows its decision."""
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "hparams_search=optuna", *TINY, f"hydra.sweep.dir={sweep}", "hydra.sweeper.n_trials=1",
                     "g_steps=12", "metrics.evaluation.every_n_g_steps=2", "hydra/sweeper/pruner=threshold",
                     "hydra.sweeper.pruner.upper=0.0", "hydra.sweeper.pruner.warmup_evaluations=1", "trainer=ddp",
                     "trainer.devices=2", "trainer.accelerator=cpu", timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (trial,) = _load(f"sqlite:///{sweep / 'optuna.db'}").trials
    assert trial.state.name == "PRUNED" and sorted(trial.intermediate_values) == [2, 4]
    for log_file in ("debug.log", "debug.rank1.log"):  # both ranks stopped at the same step
        assert (
            "Pruned: trial 0 stopped by the study's threshold pruner at step 4"
            in (sweep / "trial_0" / log_file).read_text()
        )


def test_a_failed_trial_is_recorded_and_the_search_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "hparams_search=optuna", *TINY, f"hydra.sweep.dir={sweep}", "hydra/sweeper/sampler=grid",
                     "hydra.sweeper.params=null", "model.loss=choice(hinge, not_a_loss)", "hydra.sweeper.pruner=null",
                     timeout=400)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    study = _load(f"sqlite:///{sweep / 'optuna.db'}")
    states = {t.params["model.loss"]: t for t in study.trials}
    assert states["hinge"].state.name == "COMPLETE"
    assert states["not_a_loss"].state.name == "FAIL"
    assert "not_a_loss" in states["not_a_loss"].user_attrs["error"]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["counts"] == {"complete": 1, "pruned": 0, "fail": 1}
    failed = next(t for t in results["trials"] if t["state"] == "FAIL")
    assert "not_a_loss" in failed["error"] and "\n" not in failed["error"]
    assert results["best_params"]["model.loss"] == "hinge"
    report = run_cli(str(sweep), "--static", script="report.py")
    assert report.returncode == 0 and "not_a_loss" in (sweep / "report.html").read_text()
    # continued, the grid has no point left: no trial repeats one (Optuna's grid sampler would)
    again = run_cli("-m", "hparams_search=optuna", *TINY, f"hydra.sweep.dir={sweep}", "hydra/sweeper/sampler=grid",
                    "hydra.sweeper.params=null", "model.loss=choice(hinge, not_a_loss)", "hydra.sweeper.pruner=null",
                    timeout=400)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(_load(f"sqlite:///{sweep / 'optuna.db'}").trials) == 2


def test_a_search_where_every_trial_fails_exits_non_zero_with_one_message(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "hparams_search=optuna", *TINY, f"hydra.sweep.dir={sweep}", "hydra.sweeper.n_trials=2",
                     "hydra.sweeper.params=null", "model.loss=choice(not_a_loss, nor_this)", timeout=300)  # fmt: skip
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("gankit: error: all 2 trial(s) of this sweep failed; trial 0:"), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert {t.state.name for t in _load(f"sqlite:///{sweep / 'optuna.db'}").trials} == {"FAIL"}


# ---- several trials at once ------------------------------------------------------------------------------
def test_two_trials_at_once_on_a_journal_file(tmp_path):
    """n_jobs=2 with the local launcher: two processes against one study in a journal file (the default)."""
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "hparams_search=optuna", "hydra/launcher=local", "hydra.sweeper.n_jobs=2", *TINY,
                     f"hydra.sweep.dir={sweep}", "hydra.sweeper.n_trials=2", "g_steps=30", "hydra.sweeper.pruner=null",
                     timeout=400)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert yaml.safe_load((sweep / sweeps.STUDY_FILE).read_text())["storage"] == "optuna.journal"  # in the sweep dir
    assert sweeps.read_study_file(sweep)["storage"] == str((sweep / "optuna.journal").resolve())
    study = _load(str(sweep / "optuna.journal"))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert all(len(t.intermediate_values) >= 2 for t in study.trials)  # both processes wrote to the journal
    (start0, end0), (start1, end1) = _span(sweep / "trial_0"), _span(sweep / "trial_1")
    assert max(start0, start1) < min(end0, end1)  # they ran at the same time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return versions[-1].parent if versions else None


@pytest.fixture
def postgres():
    """A throw-away PostgreSQL server on a unix socket in a temporary folder; its URL for Optuna."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries not installed (Debian: apt-get install postgresql; .ci/run installs them)")
    pytest.importorskip("psycopg2", reason="psycopg2-binary (in the dev extras) is not installed")
    folder = Path(tempfile.mkdtemp(prefix="gankit-pg-"))  # not under pytest's root-only folder: the server's user
    as_postgres = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]  # initdb refuses root
    if as_postgres:
        shutil.chown(folder, "postgres", "postgres")
    port = _free_port()

    def run(*args: str) -> None:
        subprocess.run([*as_postgres, *args], check=True, capture_output=True, timeout=120)

    run(str(bin_dir / "initdb"), "-D", str(folder / "data"), "-A", "trust", "-U", "postgres")
    run(str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-o", f"-k {folder} -p {port} -c listen_addresses=",
        "-l", str(folder / "pg.log"), "-w", "start")  # fmt: skip
    try:
        run(str(bin_dir / "createdb"), "-h", str(folder), "-p", str(port), "-U", "postgres", "optuna")
        yield f"postgresql+psycopg2://postgres@/optuna?host={folder}&port={port}"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "stop", "-m", "fast")
        shutil.rmtree(folder, ignore_errors=True)


def test_two_trials_at_once_on_a_postgresql_server(tmp_path, postgres):
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "hparams_search=optuna", "hydra/launcher=local", "hydra.sweeper.n_jobs=2", *TINY,
                     f"hydra.sweep.dir={sweep}", "hydra.sweeper.n_trials=2", "g_steps=30", "hydra.sweeper.pruner=null",
                     f"hydra.sweeper.storage='{postgres}'", timeout=400)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    study = _load(postgres)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert all(len(t.intermediate_values) >= 2 for t in study.trials)
    (start0, end0), (start1, end1) = _span(sweep / "trial_0"), _span(sweep / "trial_1")
    assert max(start0, start1) < min(end0, end1)
    assert not (sweep / "optuna.db").exists() and not (sweep / "optuna.journal").exists()


@pytest.mark.parametrize("launcher", [pytest.param("basic", marks=pytest.mark.slow), "local"])
def test_ctrl_c_stops_the_search_records_its_trials_and_exits_130(tmp_path, launcher):
    """Ctrl-C (SIGINT to the terminal's process group) while a trial trains: one line, exit 130, the trial
    recorded, optimization_results.yaml written; not "every trial failed"."""
    import signal
    import sys
    import time

    from tests.conftest import ROOT

    sweep = tmp_path / "sweep"
    args = ["-m", "hparams_search=optuna", *TINY, f"hydra.sweep.dir={sweep}", "hydra.sweeper.n_trials=2"]
    args.append("g_steps=5000")  # still training when the signal comes
    if launcher == "local":
        args += ["hydra/launcher=local", "hydra.sweeper.n_jobs=2"]
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, start_new_session=True,
                               env={**os.environ, "WANDB_MODE": "disabled"}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 180
    while not list(sweep.glob("trial_0/csv/*/metrics.csv")) + list(sweep.glob("trial_0/csv/metrics.csv")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "gankit: the search was interrupted" in stderr and "all 2 trial(s)" not in stderr
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["trials"] and all(t["state"] != "RUNNING" for t in results["trials"])


# ---- settings refused before any trial starts --------------------------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["hparams_search=optuna_fid_recall", "hydra.sweeper.pruner={name: median}"],
            "Optuna cannot prune a study with 2 objectives",
        ),
        (["hydra.sweeper.pruner.name=patient"], "hydra.sweeper.pruner.name='patient' is not a pruner; choose one of"),
        (["hydra/sweeper/pruner=threshold"], "the threshold pruner needs a number in upper or lower"),
        (
            ["hydra.sweeper.n_jobs=2", "hydra/launcher=local", "hydra.sweeper.storage=sqlite:///{tmp}/s.db"],
            "SQLite serves one process at a time, and hydra.sweeper.n_jobs=2 runs several trials at once. Use a",
        ),
        (
            ["hydra/launcher=slurm", "hydra.sweeper.storage=sqlite:///{tmp}/s.db"],
            "SQLite serves one process at a time, and hydra/launcher=slurm runs several",
        ),
        (
            ["hydra.sweeper.storage='postgresql+psycopg2://postgres@/optuna?host={tmp}/nowhere&port=1'"],
            "cannot open the study",
        ),
        (["hydra.sweeper.n_jobs=0"], "hydra.sweeper.n_jobs must be a whole number >= 1"),
        (["hparams_search=optuna_fid_recall", "hydra/sweeper/pruner=median"], "cannot prune a study with 2 objectives"),
        (  # the bare dialect: SQLAlchemy 2.1 would look for psycopg 3; gankit's driver is psycopg2
            ["hydra.sweeper.storage='postgresql://postgres@/optuna?host={tmp}/nowhere&port=1'"],
            "cannot open the study: (psycopg2.OperationalError)",
        ),
        (["metrics=none"], "optimized_metric=val/fid is not logged by this run's metrics (metrics=none logs none)"),
    ],
    ids=[
        "pruner-two-objectives",
        "unknown-pruner",
        "threshold-without-bar",
        "sqlite-n-jobs",
        "sqlite-slurm",
        "unreachable-storage",
        "n-jobs-zero",
        "pruner-group-two-objectives",
        "bare-postgresql-url",
        "metric-not-logged",
    ],  # fmt: skip
)
def test_search_settings_that_cannot_work_fail_before_any_trial(tmp_path, args, message):
    sweep = tmp_path / "sweep"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = run_cli("-m", "hparams_search=optuna", *TINY, f"hydra.sweep.dir={sweep}", *args, timeout=120)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not list(sweep.glob("trial_*")) and not (sweep / ".submitit").exists()


def test_a_sweep_directory_whose_storage_is_gone_or_whose_trials_belong_to_another_study_is_refused(tmp_path):
    """Continuing would start the numbers at 0 again over trial_0: refused, and no run is written over."""
    gone = tmp_path / "gone"
    gone.mkdir()
    (gone / "study.yaml").write_text("storage: optuna.journal\nstudy_name: debug\n")
    result = run_cli("-m", "hparams_search=optuna", *TINY, f"hydra.sweep.dir={gone}", timeout=120)
    assert result.returncode != 0 and "names the study's storage" in result.stderr and "which is gone" in result.stderr
    assert not (gone / "optuna.journal").exists() and not list(gone.glob("trial_*"))

    taken = tmp_path / "taken"
    (taken / "trial_0").mkdir(parents=True)
    (taken / "trial_0" / "train.log").write_text("an earlier run\n")
    result = run_cli("-m", "hparams_search=optuna", *TINY, f"hydra.sweep.dir={taken}", timeout=120)
    assert result.returncode != 0 and "trial_0 already holds a run" in result.stderr, result.stderr[-2000:]
    assert (taken / "trial_0" / "train.log").read_text() == "an earlier run\n"
    assert sorted(p.name for p in (taken / "trial_0").iterdir()) == ["train.log"]


def test_a_study_that_exists_with_another_direction_is_refused(tmp_path):
    import optuna

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    optuna.create_study(study_name="debug", storage=f"sqlite:///{sweep / 'optuna.db'}", direction="maximize")
    result = run_cli("-m", "hparams_search=optuna", *TINY, f"hydra.sweep.dir={sweep}", timeout=120)
    assert result.returncode != 0
    assert "already exists with direction ['maximize'], and this search asks for ['minimize']" in result.stderr
    assert not list(sweep.glob("trial_*"))


def test_a_killed_jobs_error_says_so_in_one_line():
    """submitit's message for a job that produced no result starts with its result path; the cause is line 2."""
    message = "Job 7 (task: 0) with path /s/.submitit/7/7_0_result.pkl\nhas not produced any output (state: FINISHED)\n"
    line = sweeps.first_line(RuntimeError(message + "Error stream produced:\n----\nKilled"))
    assert line.startswith("its job ended without a result (state FINISHED: killed, or out of memory?)")
    assert "7_0_result.pkl" in line and "\n" not in line
    assert sweeps.first_line(ValueError("lr=abc is not a number\ntraceback")) == "lr=abc is not a number"
