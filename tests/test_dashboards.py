"""Dashboards: what an offline W&B run records (read back from its own run file), the W&B workspace's
panels against the keys real runs log, and report.py's self-contained page (structure, the three
metric sources agreeing, bad input)."""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from gankit import report, runs
from gankit.dashboards import logged_keys, panel_keys, workspace
from gankit.loggers import metric_layout
from gankit.metric_keys import ADA_KEYS, CRITIC_KEYS, LECAM_KEYS, best_value, direction
from gankit.report import write_report
from tests.conftest import run_cli


def _env(tmp: Path) -> dict:
    return {
        "WANDB_MODE": "offline",
        "WANDB_API_KEY": "",
        "NETRC": str(tmp / "no-netrc"),
        "WANDB_CONFIG_DIR": str(tmp / "wandb-config"),
        "WANDB_CACHE_DIR": str(tmp / "wandb-cache"),
        "WANDB_DATA_DIR": str(tmp / "wandb-data"),  # W&B stages a table's images there
        "GANKIT_CACHE_DIR": str(tmp / "cache"),
    }


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A real 3-job multirun, identical but for the logger: csv, tensorboard, wandb (offline)."""
    tmp = tmp_path_factory.mktemp("sweep")
    result = run_cli(
        "-m", "debug=fast", "logger=csv,tensorboard,wandb", f"hydra.sweep.dir={tmp / 'sweep'}", env=_env(tmp)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "sweep"


@pytest.fixture(scope="module")
def offline_runs(tmp_path_factory) -> dict[str, Path]:
    """One W&B offline run per kind of data (its metrics choice): digits images, 2D points, Stacked MNIST."""
    tmp = tmp_path_factory.mktemp("kinds")
    out = {}
    for metrics, data in (("mixture", "ring"), ("stacked_mnist", "stacked_mnist")):
        result = run_cli("debug=fast", f"data={data}", "logger=wandb", f"hydra.run.dir={tmp / data}", env=_env(tmp))
        assert result.returncode == 0, result.stderr[-3000:]
        out[metrics] = tmp / data
    return out


def _wandb_file(run_dir: Path) -> Path:
    (file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    return file


def _recorded_keys(file: Path) -> set[str]:
    """Every key a W&B run logged: scalars by name, media and tables by their key (not their fields)."""
    keys = set()
    for record in runs.wandb_records(file):
        if record.WhichOneof("record_type") == "history":
            keys.update(item.key or "/".join(item.nested_key) for item in record.history.item)
    media = {k.removesuffix("/_type") for k in keys if k.endswith("/_type")}  # images, tables: fields under the key
    return media | {k for k in keys if not k.startswith("_") and not any(k.startswith(m + "/") for m in media)}


# ---- W&B: the run's own records ------------------------------------------------------------------
def test_offline_wandb_run_records_generator_step_axes_and_best_last_summaries(sweep):
    file = _wandb_file(sweep / "2")
    layout = runs.wandb_layout(file)
    assert layout["val/fid"] == {"step_metric": "g_step", "summary": ["min", "last"]}
    assert layout["val/recall"] == {"step_metric": "g_step", "summary": ["max", "last"]}
    assert layout["val/mode_kl"]["summary"] == ["min", "last"]
    assert layout["samples/grid"]["step_metric"] == "g_step"
    assert layout["kimg"]["step_metric"] == "g_step"
    # train/* stays on Lightning's step (its glob), not on g_step
    assert "train/d_loss" not in layout and layout["*"]["step_metric"] == "trainer/global_step"

    rows = runs.read_wandb(file)
    fids = [(r["g_step"], r["val/fid"]) for r in rows if "val/fid" in r]
    assert [g for g, _ in fids] == [2, 4]  # debug=fast: evaluations at generator steps 2 and 4
    assert all(
        r["kimg"] == pytest.approx(r["g_step"] * 8 / 1000) for r in rows if "val/fid" in r
    )  # n_critic 1, batch 8
    summary = runs.wandb_summary(file)
    assert summary["val/fid"] == {"min": min(v for _, v in fids), "last": fids[-1][1]}
    recalls = [r["val/recall"] for r in rows if "val/recall" in r]
    assert summary["val/recall"] == {"max": max(recalls), "last": recalls[-1]}


def test_each_evaluation_adds_one_row_to_the_evaluations_table(sweep):
    file = _wandb_file(sweep / "2")
    summary = runs.wandb_summary(file)
    assert summary["val/evaluations/nrows"] == 2 and summary["val/evaluations/log_mode"] == "INCREMENTAL"
    tables = sorted(
        file.parent.glob("files/media/table/val/evaluations_*.table.json"),
        key=lambda p: int(p.name.split("_")[1]),  # evaluations_<W&B step>_<hash>
    )
    assert len(tables) == 2  # one increment per evaluation, one row each
    last = json.loads(tables[-1].read_text())
    assert last["columns"][:2] == ["g_step", "kimg"] and "val/fid" in last["columns"]
    assert {"samples", "mode_histogram"} <= set(last["columns"])
    (row,) = last["data"]
    values = dict(zip(last["columns"], row, strict=True))
    assert values["g_step"] == 4 and values["val/fid"] == runs.wandb_summary(file)["val/fid"]["last"]
    assert values["samples"] == values["mode_histogram"] == "Image"  # W&B's reference to the row's pictures


# ---- W&B: the workspace ----------------------------------------------------------------------------
def test_workspace_builds_offline_with_the_gan_sections(sweep):
    view = workspace("entity", "project", "digits", sweep="train-sweep", columns=["model.loss"])
    names = [s.name for s in view.sections]
    assert names == ["Quality", "Coverage and collapse", "Pictures", "Training health"]
    model = view._to_model()  # what save() would send: builds without the network
    assert model.display_name.startswith("gankit")
    assert "config:model.loss" in view.runset_settings.pinned_columns
    assert "summary:val/fid.min" in view.runset_settings.pinned_columns
    with pytest.raises(ValueError, match="not a metrics config"):
        workspace("e", "p", "no_such_metrics")


def test_limited_data_panels_when_the_runs_use_ada_lecam_or_the_critic():
    plain = panel_keys(workspace("e", "p", "digits_heldout"))
    assert {"val/d_gap", "val/copying"} <= plain and not plain & {*ADA_KEYS, *LECAM_KEYS, *CRITIC_KEYS}
    view = workspace("e", "p", "digits_heldout", ada=True, lecam=True, critic=True)
    assert {*ADA_KEYS, *LECAM_KEYS, *CRITIC_KEYS} <= panel_keys(view)
    assert "Limited data (ADA, LeCam)" in [s.name for s in view.sections]
    assert {"summary:val/critic.last", "summary:train/ada_p.last"} <= set(view.runset_settings.pinned_columns)
    view._to_model()


def test_each_metric_ranks_runs_its_own_way():
    """FID: lowest; recall: highest; C_T: nearest 0 (<< 0 copies, >> 0 underfits); the critic's divergence
    against held-out data: lowest; its reading on training images: no best (a copier's is the lowest)."""
    assert best_value([40.0, 30.0, 50.0], "val/fid") == 30.0
    assert best_value([0.5, 0.8], "val/recall") == 0.8
    assert best_value([-13.1, 8.7, 0.4, -2.0], "val/copying") == 0.4
    assert best_value([5.0, 9.4], "val/critic") == 5.0
    assert best_value([3.2, -0.9], "val/critic_train") is None
    assert best_value([80.0, 110.0], "val/critic_seconds") is None  # a cost, not a score
    layout = metric_layout()
    assert layout["val/copying"]["summary"] == layout["val/critic_train"]["summary"] == "last"
    assert layout["val/critic"]["summary"] == "min,last" and direction("val/d_gap") == "min"
    assert report._best([-13.1, 8.7, 0.4, float("nan")], "val/copying") == 0.4  # the report's highlighted cell
    assert report._best([3.2, -0.9], "val/critic_train") is None


@pytest.mark.parametrize("metrics", ["digits", "mixture", "stacked_mnist"])
def test_every_panel_shows_a_key_a_real_run_of_that_kind_logs(metrics, sweep, offline_runs):
    run_dir = sweep / "2" if metrics == "digits" else offline_runs[metrics]
    recorded = _recorded_keys(_wandb_file(run_dir))
    shown = panel_keys(workspace("e", "p", metrics))
    assert shown <= recorded, f"panels without data: {sorted(shown - recorded)}"
    # and nothing the run evaluates is left off the dashboard
    assert {k for k in recorded if k.startswith("val/")} <= shown
    pictures = {"val/evaluations", "val/samples", "val/mode_histogram", "val/scatter"}
    assert set(logged_keys(metrics)["val"]) == {k for k in recorded if k.startswith("val/")} - pictures


def test_dashboard_cli_dry_run_reads_a_local_sweep_and_fails_cleanly_without_credentials(sweep, tmp_path):
    result = run_cli(
        "wandb", "--entity", "e", "--project", "p", "--sweep-dir", str(sweep), "--dry-run", script="dashboard.py"
    )
    assert result.returncode == 0, result.stderr
    assert "Quality: val/fid" in result.stdout and "config:logger" not in result.stdout  # a group choice is no key
    result = run_cli("wandb", "--entity", "e", "--project", "p", script="dashboard.py", env=_env(tmp_path))
    assert result.returncode == 1 and "could not be saved to W&B" in result.stderr and "Traceback" not in result.stderr


# ---- report.py -------------------------------------------------------------------------------------
def test_the_three_logger_outputs_read_back_the_same_history(sweep):
    jobs = runs.find_jobs(sweep)
    assert [job.name for job in jobs] == ["0", "1", "2"]
    assert [job.source for job in jobs] == ["csv", "tensorboard", "wandb"]
    assert all(job.status == "finished" for job in jobs)
    series = [job.series("val/fid") for job in jobs]
    assert series[0][0] == [2.0, 4.0]
    for other in series[1:]:  # same seed, same run: the same values, whichever logger kept them
        assert other[0] == series[0][0] and other[1] == pytest.approx(series[0][1], rel=1e-6)


def test_report_is_one_self_contained_page_with_a_chart_per_metric(sweep):
    path = write_report(sweep)
    page = path.read_text()
    assert path == sweep / "report.html"
    metrics = runs.find_jobs(sweep)[0].keys("val/")
    assert len(metrics) >= 5
    charts = re.findall(r"class=chart data-metric='(val/[a-z_]+)'", page)
    assert sorted(charts) == sorted(metrics)  # one chart per metric
    for job in ("0", "1", "2"):
        assert f"data-job='{job}'" in page  # each job's pictures
    assert page.count("<tr>") >= 4  # header + 3 jobs
    assert "logger=tensorboard" in page
    assert page.count("src='data:image/png;base64,") >= 7  # 3 grids + 3 histograms + the best job's
    # nothing from outside the file: no external scripts, styles or pictures
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=['\"]?(https?:)?//", page)
    assert "Plotly" in page  # the library itself is inlined


def test_static_report_draws_pictures_instead_of_plotly(sweep, tmp_path):
    page = write_report(sweep, tmp_path / "static.html", static=True).read_text()
    assert "Plotly.newPlot" not in page
    assert len(re.findall(r"class=chart data-metric='val/", page)) >= 5


def _copy_job(sweep: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / "broken" / name
    shutil.copytree(sweep / "0", target)
    return target


def test_report_on_damaged_running_and_failed_jobs_says_what_is_missing(sweep, tmp_path):
    cut = _copy_job(sweep, tmp_path, "0")  # a running job: metrics.csv cut mid-line, no "Done"
    text = (cut / "csv" / "metrics.csv").read_text()
    (cut / "csv" / "metrics.csv").write_text(text[: text.rindex("\n", 0, len(text) - 1) + 20])
    log = cut / "debug.log"  # task_name=debug
    log.write_text("".join(line for line in log.read_text().splitlines(True) if "Done:" not in line))
    empty = _copy_job(sweep, tmp_path, "1")  # no metrics at all
    shutil.rmtree(empty / "csv")
    failed = _copy_job(sweep, tmp_path, "2")  # stopped on bad input
    shutil.rmtree(failed / "csv")
    (failed / "debug.log").write_text("")
    (failed / "error.log").write_text("Traceback ...\nValueError: data.batch_size must be positive\n")

    result = run_cli(str(tmp_path / "broken"), script="report.py")
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "broken" / "report.html").read_text()
    jobs = {job.name: job for job in runs.find_jobs(tmp_path / "broken")}
    assert jobs["0"].status == "running or stopped" and jobs["0"].rows  # the rows before the cut
    assert len(jobs["0"].rows) < len(runs.find_jobs(sweep)[0].rows)
    assert jobs["1"].rows == [] and "no metrics written" in jobs["1"].problems[0]
    assert jobs["2"].status == "failed" and "data.batch_size must be positive" in jobs["2"].message
    assert "1: no metrics written" in page and "failed: ValueError: data.batch_size must be positive" in page


def test_report_cli_bad_directories_are_one_message(tmp_path):
    for target in (tmp_path / "missing", tmp_path):
        result = run_cli(str(target), script="report.py")
        assert result.returncode == 1
        assert result.stderr.startswith("report.py: ") and "Traceback" not in result.stderr


def test_optuna_sweep_report_has_the_trials_and_parameter_importance(sweep, tmp_path):
    import optuna

    root = tmp_path / "optuna_sweep"
    shutil.copytree(sweep / "0", root / "0")
    study = optuna.create_study(storage=f"sqlite:///{root / 'optuna.db'}", study_name="train")
    for lr, loss in ((1e-4, 3.0), (2e-4, 2.0), (5e-4, 1.5), (1e-3, 4.0)):
        study.enqueue_trial({"model.g_optimizer.lr": lr})
        study.optimize(
            lambda t, loss=loss: (
                loss
                + 0 * t.suggest_float("model.g_optimizer.lr", 1e-5, 1e-2, log=True)
                + 0 * t.suggest_int("model.n_critic", 1, 3)
            ),
            n_trials=1,
        )
    page = write_report(root).read_text()
    assert "Optuna study: train" in page and "optuna-dashboard sqlite:///" in page
    section = page[page.index("Optuna study: train") :]
    assert section.count("<tr>") == 5  # header + 4 trials
    assert "data-metric='importance'" in section and "model.g_optimizer.lr" in section


def test_a_wandb_run_file_cut_mid_record_reads_up_to_the_cut(sweep, tmp_path):
    whole = _wandb_file(sweep / "2")
    data = whole.read_bytes()
    cut = tmp_path / "run-cut.wandb"
    cut.write_bytes(data[: len(data) // 2 + 3])  # a running job's file: the last record half written
    rows, all_rows = runs.read_wandb(cut), runs.read_wandb(whole)
    assert 0 < len(rows) < len(all_rows) and rows == all_rows[: len(rows)]
    (tmp_path / "not.wandb").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a W&B run file"):
        runs.read_wandb(tmp_path / "not.wandb")


def test_a_resumed_run_keeps_its_metric_history(cfg_factory, tmp_path):
    """Lightning's CSVLogger deletes metrics.csv when a session starts in the run's folder; gankit's keeps it."""
    from gankit.training import train

    run = tmp_path / "run"
    train(cfg_factory(output_dir=run))  # evaluations at generator steps 2 and 4
    train(cfg_factory("g_steps=8", "ckpt_path=auto", output_dir=run))  # resumed: 6 and 8
    rows = runs.read_csv(run / "csv" / "metrics.csv")
    assert [r["g_step"] for r in rows if "val/fid" in r] == [2.0, 4.0, 6.0, 8.0]


def test_status_and_wall_time_come_from_the_sessions_of_a_run(tmp_path):
    job = tmp_path / "job"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text("task_name: train\n")

    def log(*lines):
        (job / "train.log").write_text(
            "".join(f"[{stamp},000][gankit.training][INFO] - {text}\n" for stamp, text in lines)
        )

    first = [("2026-01-01 10:00:00", "Run directory: x"), ("2026-01-01 10:02:00", "Done: 4 generator and 4 ...")]
    log(*first)
    assert (runs.read_job(job, "job").status, runs.read_job(job, "job").seconds) == ("finished", 120)
    log(*first, ("2026-01-01 12:00:00", "Run directory: x"), ("2026-01-01 12:00:30", "Evaluation at ..."))
    resumed = runs.read_job(job, "job")  # a resume still running: not "finished", and not the 2-hour pause
    assert resumed.status == "running or stopped" and resumed.seconds == 150
    (job / "error.log").write_text("ValueError: bad\n")
    os.utime(job / "error.log", (0, datetime(2026, 1, 1, 11).timestamp()))  # from before the resume
    assert runs.read_job(job, "job").status == "running or stopped"
    os.utime(job / "error.log", (0, datetime(2026, 1, 1, 12, 1).timestamp()))  # the resume failed
    failed = runs.read_job(job, "job")
    assert failed.status == "failed" and failed.message == "ValueError: bad"


def test_wandb_rows_hold_metrics_not_the_fields_of_pictures(sweep):
    rows = runs.read_wandb(_wandb_file(sweep / "2"))
    keys = {k for row in rows for k in row}
    assert "val/fid" in keys and not [k for k in keys if k.startswith(("val/samples", "val/evaluations", "samples/"))]


def test_dashboard_without_metrics_and_single_run_sweep_dir(sweep):
    from gankit.dashboards import sweep_settings

    keys = panel_keys(workspace("e", "p", "none"))
    assert not [k for k in keys if k.startswith("val/")] and "samples/grid" in keys and "collapse/alerts" not in keys
    assert sweep_settings(sweep)["sweep"] == f"train-{sweep.name}"
    assert sweep_settings(sweep / "0")["sweep"] == f"train-{sweep.name}"  # a job folder: its sweep's group
    single = Path(str(sweep) + "_single")
    shutil.copytree(sweep / "0", single)
    (single / ".hydra" / "hydra.yaml").write_text(
        (single / ".hydra" / "hydra.yaml").read_text().replace("mode: MULTIRUN", "mode: RUN")
    )
    with pytest.raises(ValueError, match="is a single run, not a sweep"):
        sweep_settings(single)
