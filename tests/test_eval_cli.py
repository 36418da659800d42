"""`python eval.py ckpt_path=...`: a checkpoint scored exactly as its run's last evaluation was."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, run_cli
from tests.test_training import read_metrics


def run_eval(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "eval.py"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("evalcli")
    env = {"GANKIT_LOG_DIR": str(tmp / "logs"), "GANKIT_CACHE_DIR": str(tmp / "cache")}
    result = run_cli("debug=fast", "model.ema_decay=0.9", f"hydra.run.dir={tmp / 'run'}", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "run", {**__import__("os").environ, "WANDB_MODE": "disabled", **env}


def test_eval_reproduces_the_last_training_evaluation(trained_run):
    run, env = trained_run
    result = run_eval(f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "generator step 4" in result.stdout and "fid" in result.stdout and "protocol:" in result.stdout
    (report_path,) = Path(env["GANKIT_LOG_DIR"]).glob("eval/runs/*/metrics.json")
    report = json.loads(report_path.read_text())
    last = [r for r in read_metrics(run) if r.get("val/fid")][-1]
    assert report["g_step"] == 4 and report["protocol"]["num_fake"] == 64
    for key, value in report["metrics"].items():  # same weights (EMA), same latents, same real features
        assert value == pytest.approx(float(last[key]), rel=1e-4, abs=1e-6), key
    assert list(report_path.parent.glob("eval/modes_g_step_0000004.png"))


def test_eval_with_other_metrics(trained_run):
    run, env = trained_run
    result = run_eval(
        f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        "metrics=digits",
        "metrics.evaluation.metrics=[kid,is]",
        "metrics.evaluation.num_samples=100",
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (report_path,) = sorted(Path(env["GANKIT_LOG_DIR"]).glob("eval/runs/*/metrics.json"))[-1:]
    assert set(json.loads(report_path.read_text())["metrics"]) == {"val/kid", "val/is"}


def test_eval_bad_input(trained_run, tmp_path):
    run, env = trained_run
    missing = run_eval(f"ckpt_path={tmp_path / 'nope.ckpt'}", env=env)
    assert missing.returncode == 1 and "gankit: error: ckpt_path=" in missing.stderr
    stray = tmp_path / "stray.ckpt"  # a copy outside its run directory: it carries its own config
    stray.write_bytes((run / "checkpoints" / "last.ckpt").read_bytes())
    assert run_eval(f"ckpt_path={stray}", env=env).returncode == 0
    checkpoint = torch.load(stray, weights_only=True)
    del checkpoint["gankit_config"]  # a file from before checkpoints carried their config
    torch.save(checkpoint, stray)
    outside = run_eval(f"ckpt_path={stray}", env=env)
    assert outside.returncode == 1 and "no training config found" in outside.stderr


@pytest.mark.parametrize(
    ("critic", "says"),
    [("only", "critic=only trains a critic on held-out data"), ("maybe", "critic='maybe' must be true, false or only")],
)
def test_eval_critic_settings_that_cannot_work(trained_run, tmp_path, critic, says):
    """In-process (the CLI's message is the same _report_user_errors line): one message, exit 1."""
    from hydra import compose, initialize_config_dir

    from gankit.evaluate import evaluate

    run, env = trained_run
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        overrides = [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"critic={critic}"]
        overrides += [f"paths.output_dir={tmp_path}", f"paths.cache_dir={env['GANKIT_CACHE_DIR']}"]
        cfg = compose("eval", overrides=overrides)
    with pytest.raises(SystemExit, match=re.escape(says)):
        evaluate(cfg)
