"""Real image data: the prepared cache, bad files, torchvision sets, CelebA attributes, sharding."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gankit.data import prepared
from gankit.data.base import EpochShards
from gankit.data.images import CelebADataModule, ImageFiles, ImageFolderDataModule
from gankit.data.prepared import BadImage, PreparedCache, Preprocessing, folder_identity, load_image
from gankit.data.torchvision_sets import TorchvisionDataModule, resize_uint8
from gankit.training import train
from tests.conftest import run_cli, write_images


def _folder(tmp_path: Path, **kwargs) -> ImageFolderDataModule:
    kwargs = {"resolution": 8, "batch_size": 2, "num_workers": 0, "cache_dir": str(tmp_path / "cache"), **kwargs}
    return ImageFolderDataModule(str(tmp_path / "imgs"), **kwargs)


def _odd_files(folder: Path) -> dict[str, str]:
    """One file of every awkward kind; returns name -> what should happen to it."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)).save(folder / "good.jpg")
    full = folder / "full.jpg"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(full)
    (folder / "truncated.jpg").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image\n")
    Image.fromarray(np.full((12, 12), 200, np.uint8), "L").save(folder / "grey.png")
    Image.fromarray(np.full((12, 12, 4), (10, 20, 30, 0), np.uint8), "RGBA").save(folder / "rgba.png")
    Image.fromarray(np.full((12, 12), 32896, np.uint16)).save(folder / "sixteen.png")  # 32896 / 257 = 128
    Image.fromarray(rng.integers(0, 256, (3, 5, 3), dtype=np.uint8)).save(folder / "tiny.bmp")  # below 8x8
    return {"truncated.jpg": "bad", "empty.png": "bad", "text.png": "bad"}


def test_prepare_command_then_training_reuses_the_cache(tmp_path):
    write_images(tmp_path / "imgs", 6, size=(24, 24))
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8\xff")  # a JPEG header, then nothing
    common = ["data=image_folder", f"data.root={tmp_path / 'imgs'}", "data.batch_size=2", "data.resolution=16"]
    env = {"GANKIT_CACHE_DIR": str(tmp_path / "cache")}
    result = run_cli(*common, f"hydra.run.dir={tmp_path / 'prep'}", script="prepare.py", env=env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "Skipped 1 of 7 files" in out and "Ready: 6 images of (3, 16, 16)" in out
    result = run_cli(*common, "debug=fast", "metrics=none", f"hydra.run.dir={tmp_path / 'train'}", env=env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "Preparing" not in out and "stale" not in out  # the cache prepare.py wrote
    missing = run_cli("data=celeba", f"data.root={tmp_path / 'nowhere'}", script="prepare.py", env=env)
    assert missing.returncode == 1 and "no CelebA images found" in missing.stderr


def test_prepared_array_equals_direct_decoding(tmp_path):
    paths = write_images(tmp_path / "imgs" / "a", 3, size=(40, 30)) + write_images(
        tmp_path / "imgs" / "b", 2, size=(20, 50), suffix=".png", seed=1
    )
    dm = _folder(tmp_path, crop=18)
    dm.setup("fit")
    manifest = json.loads((dm.cache.dir / "manifest.json").read_text())
    assert manifest["shape"] == [5, 3, 8, 8] and manifest["source_files"] == 5 and manifest["crop"] == 18
    assert manifest["source"] == str((tmp_path / "imgs").resolve()) and manifest["skipped"] == 0
    for i, path in enumerate(sorted(paths)):
        np.testing.assert_array_equal(dm.train_set[i].numpy(), load_image(path, Preprocessing(8, 3, 18)))
    batch = dm.train_set[[4, 0, 2]]  # a list reads a batch, in the order asked
    assert batch.dtype == torch.uint8 and torch.equal(batch[1], dm.train_set[0])


def test_bad_files_are_skipped_with_a_log_and_odd_modes_converted(tmp_path, caplog):
    fates = _odd_files(tmp_path / "imgs")
    dm = _folder(tmp_path)
    dm.setup("fit")
    skipped = (dm.cache.dir / "skipped.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in skipped) == sorted(fates)
    assert "Skipped 3 of 9 files" in caplog.text and "skipped.txt" in caplog.text
    kept = dm.cache.files(json.loads((dm.cache.dir / "manifest.json").read_text()))
    assert len(dm.train_set) == len(kept) == 6 and not set(kept) & set(fates)
    image = {name: dm.train_set[kept.index(name)] for name in kept}
    assert (image["grey.png"] == 200).all()  # grey -> RGB: every channel
    assert image["rgba.png"][:, 4, 4].tolist() == [10, 20, 30]  # alpha dropped, colour kept
    assert (image["sixteen.png"] == 128).all()  # 16-bit rescaled, not clipped to 255
    assert image["tiny.bmp"].shape == (3, 8, 8)  # smaller than the resolution: upsampled


def test_a_folder_of_only_bad_files_is_one_clear_error(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(b"")
    (tmp_path / "imgs" / "b.png").write_text("x")
    dm = _folder(tmp_path, batch_size=1)
    with pytest.raises(FileNotFoundError, match="none of the 2 files .* is a readable image"):
        dm.setup("fit")
    with pytest.raises(FileNotFoundError, match="none of the 2 files"):  # the (empty) cache says so too
        _folder(tmp_path, batch_size=1).setup("fit")


def test_cache_reused_and_rebuilt_when_the_source_or_preprocessing_changes(tmp_path, caplog):
    paths = write_images(tmp_path / "imgs", 4, size=(16, 16), suffix=".png")
    first = _folder(tmp_path)
    first.setup("fit")
    array = first.train_set.path
    second = _folder(tmp_path)
    second.setup("fit")
    assert second.train_set.path == array  # reused: same array file, not prepared again
    # rewrite one image (new content, new mtime): stale
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(paths[0])
    os.utime(paths[0], ns=(1, 1))
    third = _folder(tmp_path)
    third.setup("fit")
    assert "stale (fingerprint changed)" in caplog.text
    assert third.train_set.path != array and not array.exists()  # rebuilt, the old array removed
    assert (third.train_set[0] == 0).all()
    write_images(tmp_path / "imgs", 5, size=(16, 16), suffix=".png", seed=3)  # files added
    fourth = _folder(tmp_path)
    fourth.setup("fit")
    assert len(fourth.train_set) == 5 and fourth.train_set.path != third.train_set.path
    other = _folder(tmp_path, resolution=4)  # another preprocessing: another cache, this one kept
    other.setup("fit")
    assert other.cache.dir != fourth.cache.dir and fourth.train_set.path.exists()


def test_an_interrupted_preparation_is_never_trusted(tmp_path, monkeypatch):
    write_images(tmp_path / "imgs", 6, size=(16, 16), suffix=".png")
    real_load, calls = prepared.load_image, []

    def dying_load(path, prep):
        calls.append(path)
        if len(calls) == 4:
            raise KeyboardInterrupt  # the user pressed Ctrl-C, or the job was preempted
        return real_load(path, prep)

    monkeypatch.setattr(prepared, "load_image", dying_load)
    with pytest.raises(KeyboardInterrupt):
        _folder(tmp_path).setup("fit")
    cache_dir = _folder(tmp_path).cache.dir
    assert (
        not (cache_dir / "manifest.json").exists()
        and not list(cache_dir.glob("*.u8"))
        and not list(cache_dir.glob(".*tmp"))
    )
    monkeypatch.setattr(prepared, "load_image", real_load)
    dm = _folder(tmp_path)
    dm.setup("fit")
    assert len(dm.train_set) == 6
    # a manifest whose array was cut short (disk full, copied cache) is not trusted either
    with open(dm.train_set.path, "r+b") as handle:
        handle.truncate(100)
    again = _folder(tmp_path)
    again.setup("fit")
    assert again.train_set.path != dm.train_set.path and len(again.train_set) == 6


def _prepare_in_process(root: str, cache_dir: str, queue) -> None:
    paths = sorted(Path(root).glob("*.png"))
    prep = Preprocessing(8, 3)
    cache = PreparedCache(Path(root), paths, prep, Path(cache_dir), "x", folder_identity(Path(root), paths, prep))
    queue.put(cache.load_or_prepare()["array"])


def test_runs_started_together_prepare_once(tmp_path):
    """Two processes (a sweep's jobs) find no cache at the same moment: one prepares, the other waits and
    uses it (without the lock each would publish its own array and delete the other's)."""
    import multiprocessing

    write_images(tmp_path / "imgs", 40, size=(64, 64), suffix=".png")
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [
        context.Process(target=_prepare_in_process, args=(str(tmp_path / "imgs"), str(tmp_path / "c"), queue))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    arrays = [queue.get(timeout=5) for _ in workers]
    assert arrays[0] == arrays[1] and len(list((tmp_path / "c").glob("x-*/images-*.u8"))) == 1


def test_streaming_path_replaces_a_bad_file_instead_of_crashing(tmp_path, caplog):
    _odd_files(tmp_path / "imgs")
    dm = _folder(tmp_path, cache=False)
    dm.setup("fit")
    assert isinstance(dm.train_set, ImageFiles)
    images = [dm.train_set[i] for i in range(len(dm.train_set))]  # a whole epoch, bad files included
    assert all(image.shape == (3, 8, 8) for image in images)
    assert "Skipping unreadable image" in caplog.text and "truncated.jpg" in caplog.text


def test_on_device_path_gives_the_memmap_batches(tmp_path):
    write_images(tmp_path / "imgs", 12, size=(16, 16), suffix=".png")
    batches = {}
    for on_device in (False, True):
        dm = _folder(tmp_path, batch_size=4, on_device=on_device)
        dm.setup("fit")
        torch.manual_seed(0)
        batches[on_device] = [dm.on_after_batch_transfer(b, 0) for b in dm.train_dataloader()]
    assert len(batches[True]) == len(batches[False]) == 3
    for a, b in zip(batches[False], batches[True], strict=True):
        assert a.dtype == torch.float32 and a.min() >= -1 and a.max() <= 1
        torch.testing.assert_close(a, b)


def test_flips_are_done_on_the_batch(tmp_path):
    write_images(tmp_path / "imgs", 64, size=(8, 8), suffix=".png")
    dm = _folder(tmp_path, batch_size=64, flip=True)
    dm.setup("fit")
    plain = dm.decode(dm.train_set[list(range(64))])
    out = dm.on_after_batch_transfer(dm.train_set[list(range(64))], 0)
    flipped = torch.tensor([torch.equal(o, p.flip(2)) for o, p in zip(out, plain, strict=True)])
    kept = torch.tensor([torch.equal(o, p) for o, p in zip(out, plain, strict=True)])
    assert (flipped | kept).all() and 16 < flipped.sum() < 48  # each image flipped or not, about half


def test_epoch_shards_are_disjoint_reshuffled_and_seeded():
    data = list(range(103))
    epochs = []
    for epoch in range(2):
        shards = []
        for rank in range(2):
            sampler = EpochShards(data, 2, rank, seed=7)
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
        assert not set(shards[0]) & set(shards[1]) and len(shards[0]) == len(shards[1]) == 51
        epochs.append(shards)
    assert epochs[0] != epochs[1]
    batched = EpochShards(data, 2, 1, seed=7, batch_size=10)
    batched.set_epoch(1)
    assert len(batched) == 5 and sum(list(batched), []) == epochs[1][1][:50]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="DDP with 2 processes needs 2 cores")
def test_ddp_ranks_see_disjoint_shards_reshuffled_each_epoch(tmp_path):
    """2 CPU processes: per epoch the ranks' points are disjoint and cover the set; epochs differ;
    the order is the one EpochShards draws from the run's seed (so a rerun repeats it)."""
    result = run_cli(
        "debug=fast",
        "data=ring",
        "data.num_samples=64",
        "data.batch_size=8",
        "metrics=none",
        "g_steps=10",  # 4 batches per rank per epoch: 2.5 epochs
        "seed=5",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        f"hydra.run.dir={tmp_path}",
        "+callbacks.seen._target_=tests.helpers.SeenBatches",
        f"+callbacks.seen.dirpath={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from gankit.data.mixtures import GaussianMixture

    points = GaussianMixture(kind="ring", num_samples=64, batch_size=8).build_train_set().tensors[0]
    seen = [torch.load(tmp_path / f"seen_rank{r}.pt") for r in (0, 1)]
    for epoch in (0, 1):
        index = []
        for rank in (0, 1):
            batch = torch.cat([b for e, b in seen[rank] if e == epoch])
            index.append(torch.cdist(batch, points).argmin(1).tolist())
            sampler = EpochShards(list(range(64)), 2, rank, seed=5)
            sampler.set_epoch(epoch)
            assert index[rank] == list(sampler)
        assert not set(index[0]) & set(index[1]) and len(set(index[0]) | set(index[1])) == 64
    assert [b for e, b in seen[0] if e == 0][0].tolist() != [b for e, b in seen[0] if e == 1][0].tolist()


# ---- torchvision sets -----------------------------------------------------------------------------
def _fake_cifar(root: Path, per_batch: int = 4) -> tuple[np.ndarray, list[int]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, labels = [], []
    for i in range(1, 6):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        targets = rng.integers(0, 10, per_batch).tolist()
        with open(folder / f"data_batch_{i}", "wb") as handle:
            pickle.dump({"data": data, "labels": targets}, handle)
        images.append(data)
        labels += targets
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, handle)
    return np.concatenate(images).reshape(-1, 3, 32, 32), labels


def test_cifar10_from_its_files(tmp_path, monkeypatch, cfg_factory):
    import torchvision.datasets.cifar

    images, labels = _fake_cifar(tmp_path / "data")
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)  # fake files: md5s differ
    dm = TorchvisionDataModule("cifar10", str(tmp_path / "data"), resolution=32, download=False, batch_size=4)
    dm.setup("fit")
    stored, targets = dm.train_set.tensors
    np.testing.assert_array_equal(stored.numpy(), images)
    assert targets.tolist() == labels
    small = resize_uint8(stored, 16)
    # torch's antialiased bilinear follows PIL's resampling: PIL is the independent reference
    reference = np.stack(
        [np.asarray(Image.fromarray(image.transpose(1, 2, 0)).resize((16, 16), Image.BILINEAR)) for image in images]
    ).transpose(0, 3, 1, 2)
    assert np.abs(small.numpy().astype(int) - reference).max() <= 1
    cfg = cfg_factory("data=cifar10", f"data.root={tmp_path / 'data'}", "data.download=false", "metrics=none")
    train(cfg)
    assert (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").is_file()


def _write_idx(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    magic = {3: 2051, 1: 2049}[array.ndim]
    path.write_bytes(struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes())


def test_mnist_full_from_its_files_and_rgb(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    digits = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    _write_idx(raw / "train-images-idx3-ubyte", digits)
    _write_idx(raw / "train-labels-idx1-ubyte", np.arange(6))
    _write_idx(raw / "t10k-images-idx3-ubyte", digits[:1])  # torchvision wants the test split's files too
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(1))
    dm = TorchvisionDataModule("mnist", str(tmp_path), resolution=28, channels=3, download=False, batch_size=2)
    dm.setup("fit")
    images, labels = dm.train_set.tensors
    assert images.shape == (6, 3, 28, 28) and labels.tolist() == list(range(6))
    assert (images == torch.from_numpy(digits)[:, None]).all()  # grey repeated into RGB


def test_offline_download_fails_fast_with_instructions(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])  # nothing listens
    dm = TorchvisionDataModule("mnist", str(tmp_path / "data"), download=True)
    with pytest.raises(FileNotFoundError) as error:
        dm.prepare_data()
    message = str(error.value)
    assert "could not fetch it" in message and "MNIST/raw/" in message and "data=mnist" in message
    dm = TorchvisionDataModule("mnist", str(tmp_path / "data"), download=False)
    with pytest.raises(FileNotFoundError, match="data.download=false"):
        dm.setup("fit")


# ---- CelebA ---------------------------------------------------------------------------------------------
def _fake_celeba(root: Path, count: int = 8) -> list[list[int]]:
    write_images(root / "celeba" / "img_align_celeba", count)
    names = ["5_o_Clock_Shadow", "Male", "Smiling"]
    rows = [[1 if (i >> b) & 1 else -1 for b in range(3)] for i in range(count)]
    lines = [str(count), " ".join(names)] + [f"{i + 1:06d}.jpg " + " ".join(map(str, r)) for i, r in enumerate(rows)]
    (root / "celeba" / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    return rows


def test_celeba_attributes_become_class_labels(tmp_path, cfg_factory):
    rows = _fake_celeba(tmp_path / "data")
    dm = CelebADataModule(
        str(tmp_path / "data"),
        resolution=8,
        attributes=["Male", "Smiling"],
        num_classes=4,
        batch_size=2,
        num_workers=0,
        cache_dir=str(tmp_path / "cache"),
    )
    dm.setup("fit")
    _, labels = dm.train_set[list(range(8))]
    assert labels.tolist() == [(r[1] > 0) + 2 * (r[2] > 0) for r in rows]
    cfg = cfg_factory(
        "model=cgan_dcgan",
        "data=celeba",
        f"data.root={tmp_path / 'data'}",
        "data.attributes=[Male]",
        "data.num_classes=2",
        "data.batch_size=4",
        "metrics=none",
    )
    train(cfg)  # a conditional model trains on attribute labels


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"attributes": ["Bald"]}, r"\['Bald'\] not in list_attr_celeba.txt"),
        ({"attributes": ["Male"], "num_classes": 4}, "this data set has 2 classes"),
        ({"attributes": ["Male"], "drop_list": True}, "needs list_attr_celeba.txt"),
    ],
)
def test_celeba_attribute_mistakes_fail_at_start(tmp_path, change, message):
    _fake_celeba(tmp_path / "data")
    if change.pop("drop_list", False):
        (tmp_path / "data" / "celeba" / "list_attr_celeba.txt").unlink()
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        CelebADataModule(str(tmp_path / "data"), batch_size=2, cache_dir=str(tmp_path / "cache"), **change)


def test_celeba_download_failure_is_one_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets.celeba as tv_celeba

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_celeba, "download_file_from_google_drive", offline)
    with pytest.raises(FileNotFoundError, match="could not fetch CelebA .* name resolution.*data.download=false"):
        CelebADataModule(str(tmp_path), download=True).prepare_data()


def test_direct_decoding_refuses_bad_files(tmp_path):
    _odd_files(tmp_path)
    for name in ("truncated.jpg", "empty.png", "text.png"):
        with pytest.raises(BadImage):
            load_image(tmp_path / name, Preprocessing(8, 3))
    prep = Preprocessing(8, 3)
    identity = folder_identity(tmp_path, [], prep)
    assert PreparedCache(tmp_path, [], prep, tmp_path / "c", "x", identity).load_manifest() is None
