"""`python generate.py ckpt_path=...` and slerp."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gankit.generate import slerp
from tests.conftest import ROOT, run_cli


def test_slerp_endpoints_norms_and_great_circle():
    a, b = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 2.0, 0.0]])
    path = slerp(a, b, torch.linspace(0, 1, 5))[0]
    torch.testing.assert_close(path[0], a[0])
    torch.testing.assert_close(path[-1], b[0])
    torch.testing.assert_close(path.norm(dim=1), torch.linspace(1, 2, 5))  # norms interpolate linearly
    angles = torch.atan2(path[:, 1], path[:, 0])  # the direction turns at constant speed in the a-b plane
    torch.testing.assert_close(angles, torch.linspace(0, torch.pi / 2, 5))
    same = slerp(a, 3 * a, torch.tensor([0.5]))[0, 0]  # parallel: no NaN, linear
    torch.testing.assert_close(same, torch.tensor([2.0, 0.0, 0.0]))


def train_then_generate(tmp_path: Path, train_args: list[str], generate_args: list[str]) -> Path:
    """A debug run through the CLI, then generate.py on its last checkpoint; returns generate's run directory."""
    env = {"GANKIT_LOG_DIR": str(tmp_path / "logs"), "GANKIT_CACHE_DIR": str(tmp_path / "cache")}
    trained = run_cli("debug=fast", "metrics=none", *train_args, f"hydra.run.dir={tmp_path / 'run'}", env=env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    result = subprocess.run(
        [sys.executable, str(ROOT / "generate.py"), f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}",
         *generate_args, f"hydra.run.dir={tmp_path / 'gen'}"],
        cwd=ROOT, env={**os.environ, "WANDB_MODE": "disabled", **env}, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path / "gen"


def test_generate_writes_grid_interpolation_and_raw_samples(tmp_path):
    out = train_then_generate(tmp_path, [], ["num_samples=12", "interpolation.rows=3", "interpolation.steps=4"])
    samples = np.load(out / "samples.npy")
    assert samples.shape == (12, 1, 16, 16) and samples.dtype == np.float32
    assert samples.min() >= -1 and samples.max() <= 1
    png = np.asarray(Image.open(out / "samples" / "000011.png").convert("L"), dtype=np.float32)
    assert png == pytest.approx((samples[11, 0] + 1) / 2 * 255, abs=1.0)  # the same sample, 8-bit
    width, height = Image.open(out / "interpolation.png").size
    assert (width, height) == (4 * 18 + 2, 3 * 18 + 2)  # 4 steps x 3 rows of 16px images, 2px padding
    assert (out / "grid.png").is_file()


TRAVERSALS = ["traversal_categorical.png", "traversal_continuous_1.png"]


@pytest.mark.parametrize(("model", "files"), [("cgan_dcgan", ["classes.png"]), ("infogan", TRAVERSALS)])
def test_generate_class_grids_and_code_traversals(tmp_path, model, files):
    out = train_then_generate(tmp_path, [f"model={model}"], ["num_samples=4", "png=false", "nrow=5"])
    for name in files:
        width, height = Image.open(out / name).size
        assert width == 5 * 18 + 2 or width == 10 * 18 + 2  # nrow columns (or interpolation.steps)
        assert height == 10 * 18 + 2 or height == 8 * 18 + 2  # 10 classes / categories, or 8 rows
