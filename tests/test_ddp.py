"""Two CPU processes through the real command line: what each rank draws, writes and decides."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, run_cli
from tests.test_training import read_metrics

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="DDP with 2 processes needs 2 cores")
DDP = ["debug=fast", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "logger=csv"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple[Path, dict]:
    """The default DCGAN (no EMA: each rank has its own batch-norm statistics), 4 G steps on 2 processes, on 500
    digits with the generalisation metrics (D's batch-norm statistics differ per rank too)."""
    tmp = tmp_path_factory.mktemp("ddp")
    env = {"GANKIT_LOG_DIR": str(tmp / "logs"), "GANKIT_CACHE_DIR": str(tmp / "cache")}
    run = tmp / "run"
    result = run_cli(
        *DDP,
        "g_steps=4",
        "metrics=digits_heldout",
        "data.limit=500",
        "model.d_optimizer.lr=0.02",  # D moves in 4 steps: its ranks' batch-norm statistics drift apart
        f"hydra.run.dir={run}",
        "+callbacks.probe._target_=tests.helpers.LatentProbe",
        f"+callbacks.probe.dirpath={run}",
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run, {**os.environ, "WANDB_MODE": "disabled", **env}


def test_ranks_draw_different_training_noise(ddp_run):
    """Each rank's fakes are its own: one G step of 2 processes sees 2 x batch_size distinct latents."""
    run, _ = ddp_run
    rank0, rank1 = (torch.load(run / f"latents_rank{r}.pt") for r in (0, 1))
    assert len(rank0) == len(rank1) == 8  # 4 cycles of one D and one G draw
    for z0, z1 in zip(rank0, rank1, strict=True):
        both = torch.cat([z0, z1])
        assert len(torch.unique(both, dim=0)) == len(both) == 16  # batch 8 per rank


def test_ddp_metrics_equal_eval_on_the_saved_weights(ddp_run):
    """Without EMA, every rank samples (and D scores d_gap's images) with rank 0's batch-norm statistics: those
    eval.py loads."""
    run, env = ddp_run
    result = subprocess.run(
        [sys.executable, str(ROOT / "eval.py"), f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (report_path,) = Path(env["GANKIT_LOG_DIR"]).glob("eval/runs/*/metrics.json")
    report = json.loads(report_path.read_text())
    last = [r for r in read_metrics(run) if r.get("val/fid")][-1]
    assert report["g_step"] == 4
    assert {"val/d_gap", "val/copying"} <= set(report["metrics"])
    # with rank 1 scoring by its own D statistics, d_gap was off by ~3e-4 relative here
    assert float(last["val/d_gap"]) == pytest.approx(report["metrics"]["val/d_gap"], rel=1e-6)
    for key, value in report["metrics"].items():
        assert float(last[key]) == pytest.approx(value, rel=1e-4, abs=1e-5), key


def test_each_rank_writes_its_own_log_file(ddp_run):
    run, _ = ddp_run
    main, rank1 = (run / "debug.log").read_text(), (run / "debug.rank1.log").read_text()
    for step in (2, 4):  # each rank logs its evaluations: once in each file, not twice in one
        assert main.count(f"Evaluation at generator step {step}:") == 1
        assert rank1.count(f"Evaluation at generator step {step}:") == 1


def test_a_divergence_on_one_rank_stops_every_rank_with_the_message(tmp_path):
    result = run_cli(
        *DDP,
        "g_steps=4",
        "metrics=none",
        f"hydra.run.dir={tmp_path}",
        "+callbacks.poison._target_=tests.helpers.PoisonRank",
        timeout=240,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "another rank's losses became non-finite" in result.stderr  # rank 0 says it
    assert "train/d_loss became non-finite" in result.stderr  # rank 1 says which
    assert (tmp_path / "error.log").is_file() and (tmp_path / "error.rank1.log").is_file()


def test_multirun_jobs_run_their_own_config_on_every_rank(tmp_path):
    """`-m` with DDP: each job's rank 1 trains that job's loss in that job's folder, and the sweep ends."""
    logs = tmp_path / "logs"
    result = run_cli(
        "-m",
        *DDP,
        "g_steps=2",
        "metrics=none",
        "model.loss=hinge,least_squares",
        "+callbacks.probe._target_=tests.helpers.ConfigProbe",
        "+callbacks.probe.dirpath=${paths.output_dir}",
        env={"GANKIT_LOG_DIR": str(logs)},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (logs / "debug" / "multiruns").iterdir()  # one sweep folder: no child started its own
    assert not (logs / "debug" / "runs").exists()
    for job, loss in ((0, "hinge"), (1, "least_squares")):
        records = [torch.load(sweep / str(job) / f"config_rank{r}.pt") for r in (0, 1)]
        assert [r["loss"] for r in records] == [loss, loss]
        assert {Path(r["root"]).resolve() for r in records} == {(sweep / str(job)).resolve()}
        assert records[0]["world"] == 2


def test_download_happens_once_before_the_other_ranks_read(tmp_path):
    """data.download=true under DDP: rank 0 downloads (Lightning's prepare_data), the others wait and read."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('FAKE_CELEBA_LOG'):\n"
        "    import numpy as np\n"
        "    from PIL import Image\n"
        "    import gankit.data.images as images\n"
        "    def fake_download(root):\n"
        "        with open(os.environ['FAKE_CELEBA_LOG'], 'a') as log:\n"
        "            log.write(f'{os.getpid()}\\n')\n"
        "        folder = root / 'celeba' / 'img_align_celeba'\n"
        "        folder.mkdir(parents=True, exist_ok=True)\n"
        "        rng = np.random.default_rng(0)\n"
        "        for i in range(16):\n"
        "            pixels = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)\n"
        "            Image.fromarray(pixels).save(folder / f'{i + 1:06d}.jpg')\n"
        "    images.download_celeba = fake_download\n"
    )
    calls = tmp_path / "downloads.txt"
    result = run_cli(
        *DDP,
        "data=celeba",
        f"data.root={tmp_path / 'data'}",
        "data.download=true",
        "data.num_workers=0",
        f"data.cache_dir={tmp_path / 'cache'}",
        "metrics=none",
        "g_steps=1",
        f"hydra.run.dir={tmp_path / 'run'}",
        env={"PYTHONPATH": str(site), "FAKE_CELEBA_LOG": str(calls)},
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(calls.read_text().split()) == 1
