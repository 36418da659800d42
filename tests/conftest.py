"""Compose the real config (conf/) with tiny debug settings, as `python train.py debug=fast` would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def pytest_configure(config):
    """Under pytest-xdist, each worker (and what it starts) gets its share of the cores, not all of them."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def make_cfg(output_dir: Path, *overrides: str) -> DictConfig:
    """The composed training config with `debug=fast`, writing into `output_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["debug=fast", *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg.hydra  # as in a real run: the task sees no hydra node
    return cfg


@pytest.fixture
def cfg_factory(tmp_path):
    """make_cfg bound to a fresh run directory under tmp_path."""
    counter = iter(range(1000))

    def factory(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        return make_cfg(output_dir or tmp_path / f"run{next(counter)}", *overrides)

    return factory


def run_cli(
    *args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 300, script: str = "train.py"
) -> subprocess.CompletedProcess:
    """`python train.py args...` (or another entry point) in a subprocess, as a user would type it."""
    full_env = {**os.environ, "WANDB_MODE": "disabled", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_images(
    folder: Path, count: int, size: tuple[int, int] = (178, 218), suffix: str = ".jpg", seed: int = 0
) -> list[Path]:
    """Random RGB images (width, height) = size, as files with the given suffix."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        path = folder / f"{i + 1:06d}{suffix}"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gankit-cache")


@pytest.fixture(autouse=True)
def _isolate_wandb(tmp_path, monkeypatch, _session_cache):
    """No test reads the developer's W&B credentials or torch.hub cache, or writes outside tmp_path."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no Inception weights but the tests' own
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # where W&B stages a table's images
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("GANKIT_CACHE_DIR", str(_session_cache))  # real features and prepared data, per session


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory) -> Path:
    """A random-weights file of torch-fidelity's InceptionV3 architecture (the real one cannot be fetched here)."""
    from gankit.metrics import features

    return features.write_random_inception_weights(tmp_path_factory.mktemp("inception") / features.INCEPTION_FILE)
