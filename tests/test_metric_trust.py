"""What the metrics are computed on: data identity, reference subsets, labels, EMA statistics, timing."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from PIL import Image

from gankit.callbacks.evaluation import Evaluation
from gankit.data.mnist import EmbeddedMNIST, load_embedded_digits
from gankit.data.torchvision_sets import TorchvisionDataModule
from gankit.metrics.features import DigitsFeatures
from gankit.randomness import labels_in_proportion, proportional_counts, reference_indices
from gankit.training import train
from tests.conftest import CONF, ROOT
from tests.test_training import read_metrics


# ---- 1. identity: every cache keys on what the images depend on -----------------------------
def test_torchvision_sets_of_other_names_or_channels_have_other_identities(tmp_path):
    def identity(name, channels=None):
        return TorchvisionDataModule(name, str(tmp_path), channels=channels, download=False).identity()

    assert identity("mnist") != identity("fashion_mnist")
    assert identity("cifar10") != identity("mnist", channels=3)
    assert identity("mnist") == identity("mnist")


def _digit_folder(folder: Path, offset: int, count: int = 40) -> None:
    images, _ = load_embedded_digits()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(images[(offset + 97 * i) % len(images), 0].numpy()).save(folder / f"{i:03d}.png")


def test_a_folder_rewritten_under_the_same_names_is_scored_against_its_new_images(cfg_factory, tmp_path):
    """The issue's case: digit PNGs, a run; the same names rewritten with other digits; warm = cold cache."""
    folder = tmp_path / "digits"
    common = ["data=image_folder", f"data.root={folder}", "data.channels=1", "data.resolution=16",
              "data.num_workers=0", "metrics=digits", "metrics.evaluation.num_samples=32", "g_steps=2"]  # fmt: skip
    _digit_folder(folder, offset=0)
    train(cfg_factory(*common, f"paths.cache_dir={tmp_path / 'warm'}"))
    _digit_folder(folder, offset=2500)  # other digits, same file names
    fids = []
    for cache in ("warm", "cold"):
        cfg = cfg_factory(*common, f"paths.cache_dir={tmp_path / cache}")
        train(cfg)
        fids.append(float([r for r in read_metrics(Path(cfg.paths.output_dir)) if r.get("val/fid")][-1]["val/fid"]))
    assert fids[0] == pytest.approx(fids[1], rel=1e-6)


def test_every_data_config_says_its_identity(tmp_path):
    """A data module without `source()` cannot hide: each shipped data config answers identity()."""
    from hydra.utils import instantiate

    from tests.conftest import write_images

    write_images(tmp_path / "data" / "celeba" / "img_align_celeba", 4, size=(20, 24))
    for data in sorted(p.stem for p in (CONF / "data").glob("*.yaml")):
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(CONF), version_base="1.3"):
            cfg = compose(
                "train", overrides=[f"data={data}", f"paths.data_dir={tmp_path / 'data'}", "data.batch_size=2"]
            )
        if data == "image_folder":
            cfg.data.root = str(tmp_path / "data")
        dm = instantiate(cfg.data, **({"download": False} if "download" in cfg.data else {}))
        identity = dm.identity()
        assert identity["data"] == type(dm).__qualname__ and len(identity) > 5, data


# ---- 2. the reference set: a seeded random subset, stratified by class ------------------------
def test_reference_subset_of_the_label_sorted_digits_covers_every_class():
    dm = EmbeddedMNIST(resolution=16)
    labels = dm.train_labels()
    evaluation = Evaluation(DigitsFeatures(), "unused", num_samples=1000, seed=3)
    chosen = evaluation.reference_indices(len(labels), labels)
    assert torch.bincount(labels[chosen], minlength=10).tolist() == [100] * 10  # not the first 1,000 (0s and 1s)
    assert torch.equal(chosen, evaluation.reference_indices(len(labels), labels))  # same on every rank / run
    other = Evaluation(DigitsFeatures(), "unused", num_samples=1000, seed=4).reference_indices(len(labels), labels)
    assert not torch.equal(chosen, other)
    small = Evaluation(DigitsFeatures(), "unused", num_samples=64, seed=0).reference_indices(len(labels), labels)
    assert len(torch.unique(labels[small])) == 10  # debug=fast's 64: not only 0s


def test_stratified_subsets_keep_class_shares_and_unlabeled_ones_are_random():
    labels = torch.tensor([0] * 700 + [1] * 200 + [2] * 100)
    chosen = reference_indices(1000, 100, labels, torch.Generator().manual_seed(0))
    assert torch.bincount(labels[chosen]).tolist() == [70, 20, 10] and len(torch.unique(chosen)) == 100
    plain = reference_indices(1000, 100, None, torch.Generator().manual_seed(0))
    assert len(torch.unique(plain)) == 100 and plain.max() > 500
    assert torch.equal(reference_indices(50, 80, labels[:50], torch.Generator()), torch.arange(50))


@pytest.mark.parametrize("n", [1, 7, 100, 1001])
def test_proportional_counts_sum_to_n_and_follow_the_weights(n):
    weights = torch.tensor([0.5, 0.3, 0.15, 0.05])
    counts = proportional_counts(weights, n)
    assert int(counts.sum()) == n
    assert (counts - weights * n).abs().max() < 1


# ---- 3. EMA batch-norm statistics see every class ----------------------------------------------
def test_ema_standing_statistics_cover_all_classes_of_a_1000_class_model():
    from gankit.module import GANModule
    from gankit.networks.dcgan import Discriminator, Generator

    generator = Generator(latent_dim=4, resolution=16, channels=3, base_width=2, num_classes=1000)
    discriminator = Discriminator(resolution=16, channels=3, base_width=2, num_classes=1000)
    module = GANModule(generator, discriminator, torch.optim.Adam, torch.optim.Adam, ema_decay=0.9, num_classes=1000)
    seen = []
    ema_net = module.generator_ema.module
    forward = ema_net.forward
    ema_net.forward = lambda z, y: (seen.append(y), forward(z, y))[1]
    module._ema_generator()
    labels = torch.cat(seen)
    assert torch.equal(torch.unique(labels), torch.arange(1000))  # before: arange(256) % K, a quarter


# ---- 4. conditional models are evaluated on the real label distribution ----------------------
def test_evaluation_fake_labels_follow_the_training_labels():
    evaluation = Evaluation(DigitsFeatures(), "unused", num_samples=200)
    evaluation.class_weights = torch.tensor([0.6, 0.3, 0.1, 0.0]).double()
    labels = evaluation.fake_labels(4, torch.Generator().manual_seed(0))
    assert torch.bincount(labels, minlength=4).tolist() == [120, 60, 20, 0]
    drawn = labels_in_proportion(torch.ones(10), 1000, torch.Generator().manual_seed(1))
    assert torch.bincount(drawn).tolist() == [100] * 10 and not torch.equal(drawn, drawn.sort().values)


# ---- 5. evaluation on the schedule only: never an untrained generator --------------------------
def test_no_evaluation_before_the_first_generator_step_with_n_critic(cfg_factory):
    cfg = cfg_factory("model.n_critic=2", "g_steps=4")
    train(cfg)
    evaluated = sorted(int(p.stem.rsplit("_", 1)[1]) for p in Path(cfg.paths.output_dir, "eval").glob("modes_*.png"))
    assert evaluated == [2, 4]


# ---- 7. every key named in an error message or the README exists -------------------------------
GROUPS = ("model", "data", "metrics", "callbacks", "trainer", "logger", "paths")
# a dotted key after nothing key-like; `+key=` adds a key (not one that must exist); file names are not keys
KEY = re.compile(r"(?<![\w./+-])((?:" + "|".join(GROUPS) + r")(?:\.[A-Za-z_]\w*)+)(?!\w)(?<!\.json)(?<!\.csv)")


def _composed_keys() -> set[str]:
    """Every dotted key of the training config under each data, model and metrics choice."""
    keys: set[str] = set()

    def walk(node, prefix):
        for k, v in node.items():
            keys.add(f"{prefix}{k}")
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")

    choices = [[f"{group}={p.stem}"] for group in ("model", "data", "logger", "trainer")
               for p in (CONF / group).glob("*.yaml")]  # fmt: skip
    choices += [[f"metrics={p.stem}"] for p in (CONF / "metrics").glob("*.yaml") if p.stem != "base"]
    for overrides in choices:
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(CONF), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
        walk(OmegaConf.to_container(cfg, resolve=False), "")
    return keys


def _named_keys() -> dict[str, str]:
    """Dotted config keys in gankit's string literals (messages) and in the README, with where they appear."""
    found = {}
    for path in sorted((ROOT / "src" / "gankit").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node is not None:
                for key in KEY.findall(node.value):
                    found.setdefault(key, path.name)
    for key in KEY.findall((ROOT / "README.md").read_text()):
        found.setdefault(key, "README.md")
    return found


def test_every_key_named_in_a_message_or_the_readme_exists():
    keys = _composed_keys()
    missing = {key: where for key, where in _named_keys().items() if key not in keys}
    assert not missing, missing


def test_the_key_check_finds_a_wrong_key():
    assert "metrics.num_real" in KEY.findall("metrics.num_real=6000 is more than")
    assert "metrics.num_real" not in _composed_keys()


# ---- also: KID and IS against independent computations -----------------------------------------
def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    m, n = len(x), len(y)
    return (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean()


def test_kid_equals_a_direct_unbiased_mmd_with_the_cubic_kernel():
    from torchmetrics.image.kid import KernelInceptionDistance

    from gankit.callbacks.evaluation import Identity

    rng = np.random.default_rng(0)
    real, fake = rng.normal(0, 1, (60, 8)), rng.normal(0.3, 1.2, (50, 8))
    kid = KernelInceptionDistance(feature=Identity(8), subsets=1, subset_size=50).double()
    kid.update(torch.from_numpy(real), real=True)
    kid.update(torch.from_numpy(fake), real=False)
    torch.manual_seed(0)  # the subset of 50 of the 60 real rows: redraw it as KID does
    value = kid.compute()[0].item()
    torch.manual_seed(0)
    real_rows = torch.randperm(60)[:50].numpy()
    fake_rows = torch.randperm(50)[:50].numpy()
    assert value == pytest.approx(_mmd2_unbiased(real[real_rows], fake[fake_rows]), rel=1e-9)


def test_inception_score_equals_its_closed_form():
    from torchmetrics.image.inception import InceptionScore

    from gankit.callbacks.evaluation import Identity

    logits = torch.from_numpy(np.random.default_rng(1).normal(0, 2, (200, 10)))
    metric = InceptionScore(feature=Identity(0), splits=1).double()
    metric.update(logits)
    torch.manual_seed(0)
    value = metric.compute()[0].item()
    p = torch.softmax(logits, 1).numpy()  # exp(E_x KL(p(y|x) || p(y)))
    marginal = p.mean(0, keepdims=True)
    expected = np.exp((p * (np.log(p) - np.log(marginal))).sum(1).mean())
    assert value == pytest.approx(expected, rel=1e-9)
