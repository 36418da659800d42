"""The prepared cache: an image set decoded once into one uint8 array file, read through a memory map.

Decoding a JPEG costs milliseconds; a GAN at 64x64 wants thousands of images a second. So a folder
of images is decoded, converted, center-cropped and resized once (`prepare`), in parallel, and
stored as `images-<token>.u8`, a raw uint8 array [N, C, R, R], next to:

- `files-<token>.txt`: the source files kept, one relative path per line (row i of the array is line i);
- `skipped.txt`: the files that could not be read, with the reason (corrupt, empty, not an image);
- `manifest.json`: the data module's identity (source root, file count, a fingerprint of the files'
  names, sizes and modification times, resolution, channels, preprocessing), the array's file name and shape.

The manifest is written last, by an atomic rename, and names the array it describes: a reader
trusts a cache only through a manifest that matches the source and the preprocessing, so an
interrupted preparation (or one that failed) is never used, and a changed source or preprocessing
is rebuilt. Readers open the array with `np.memmap`, so DataLoader workers share the page cache
instead of holding copies.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the layout or the preprocessing code changes: older caches are rebuilt
MODES = {1: "L", 3: "RGB"}


@dataclass(frozen=True)
class Preprocessing:
    """What is done to every image: convert to `channels`, center-crop a square of side `crop` (None:
    the shorter side; capped at it), resize to `resolution` (Lanczos, so antialiased both ways)."""

    resolution: int
    channels: int
    crop: int | None = None

    def __post_init__(self) -> None:
        if self.channels not in MODES:
            raise ValueError(f"data.channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")
        if self.resolution < 1 or (self.crop is not None and self.crop < 1):
            raise ValueError(f"data.resolution and data.crop must be positive, got {self.resolution}, {self.crop}")


class BadImage(Exception):
    """A file that cannot be used as an image (the message says why)."""


def to_mode(image: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode -> L or RGB. 16- and 32-bit grayscale is rescaled (PIL's convert would clip it)."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(pixels.max()), 1.0)
        image = Image.fromarray(np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # PIL warns when palette transparency is dropped directly
    return image.convert(MODES[channels])


def load_image(path: Path, prep: Preprocessing) -> np.ndarray:
    """One file -> uint8 [C, R, R]; raises BadImage for files that are empty, truncated or not images."""
    if path.stat().st_size == 0:
        raise BadImage("empty file")
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file raises here, not later
            image = to_mode(image, prep.channels)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise BadImage(f"{type(error).__name__}: {error}") from error
    width, height = image.size
    side = min(width, height, prep.crop or min(width, height))
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))  # first: resize's filter must not see outside
    image = image.resize((prep.resolution,) * 2, Image.Resampling.LANCZOS)
    pixels = np.asarray(image, dtype=np.uint8)
    return np.ascontiguousarray(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))  # a writable copy


def fingerprint(root: Path, paths: list[Path]) -> str:
    """A digest of the file list with sizes and modification times: any added, removed or rewritten file changes it."""
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class _Decode(Dataset):
    """For the parallel preparation: item i -> (i, pixels or None, why not)."""

    def __init__(self, paths: list[Path], prep: Preprocessing) -> None:
        self.paths, self.prep = paths, prep

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str]:
        try:
            return index, load_image(self.paths[index], self.prep), ""
        except BadImage as error:
            return index, None, str(error)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def folder_identity(root: Path, paths: list[Path], prep: Preprocessing) -> dict:
    """What images decoded from `paths` under `root` depend on: the folder, its files, the preprocessing."""
    root = root.resolve()
    return {"source": str(root), "source_files": len(paths), "fingerprint": fingerprint(root, paths), **asdict(prep)}


class PreparedCache:
    """The cache of one source folder under one preprocessing, in `cache_dir/<name>-<key>/`.

    `identity` is the data module's (GANDataModule.identity): a manifest that does not match it
    is stale. The folder is named by the source and preprocessing only, so a changed source is
    prepared again in place of the old array rather than beside it.
    """

    def __init__(
        self, root: Path, paths: list[Path], prep: Preprocessing, cache_dir: Path, name: str, identity: dict
    ) -> None:
        self.root, self.paths, self.prep, self.identity = root.resolve(), paths, prep, identity
        key = json.dumps({"root": str(self.root), "prep": asdict(prep), "format": FORMAT}, sort_keys=True)
        self.dir = Path(cache_dir).expanduser() / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    def expected(self) -> dict:
        """What a manifest must say for the cache to be used."""
        return {"format": FORMAT, **self.identity}

    def load_manifest(self) -> dict | None:
        """The manifest when it describes this source and preprocessing and its array is whole; else None."""
        path = self.dir / "manifest.json"
        if not path.is_file():
            return None
        try:
            manifest = json.loads(path.read_text())
            expected = self.expected()
            stale = [key for key, value in expected.items() if manifest.get(key) != value]
            array = self.dir / manifest["array"]
            size = int(np.prod(manifest["shape"]))
            files = self.dir / manifest["files"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("Unreadable data cache manifest %s (%s): preparing again.", path, error)
            return None
        if stale:
            log.warning("The data cache %s is stale (%s changed): preparing again.", self.dir, ", ".join(stale))
            return None
        if not array.is_file() or array.stat().st_size != size or not files.is_file():
            log.warning("The data cache array %s is missing or incomplete: preparing again.", array)
            return None
        return manifest

    def prepare(self, num_workers: int = 0, batch_size: int = 64) -> dict:
        """Decode every source file into a new array, then publish it with the manifest (atomically)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        expected = self.expected()  # the identity was taken before reading: a change during preparation shows next time
        token = secrets.token_hex(4)
        array_name = f"images-{token}.u8"
        tmp = self.dir / f".{array_name}.tmp"
        shape_one = (self.prep.channels, self.prep.resolution, self.prep.resolution)
        kept: list[str] = []
        skipped: list[str] = []
        try:
            array = np.memmap(tmp, np.uint8, "w+", shape=(max(len(self.paths), 1), *shape_one))
            workers = min(num_workers, os.cpu_count() or 1)
            loader = DataLoader(
                _Decode(self.paths, self.prep), batch_size=batch_size, num_workers=workers, collate_fn=list
            )
            for items in _progress(loader, f"Preparing {len(self.paths)} images into {self.dir}"):
                for index, pixels, why in items:
                    name = str(self.paths[index].relative_to(self.root))
                    if pixels is None:
                        skipped.append(f"{name}\t{why}")
                    else:
                        array[len(kept)] = pixels
                        kept.append(name)
            array.flush()
            del array
            with open(tmp, "r+b") as handle:  # drop the rows of skipped files
                handle.truncate(len(kept) * int(np.prod(shape_one)))
                os.fsync(handle.fileno())
            os.replace(tmp, self.dir / array_name)
        finally:
            tmp.unlink(missing_ok=True)
        files_name = f"files-{token}.txt"
        _write_atomic(self.dir / files_name, "".join(f"{name}\n" for name in kept))
        _write_atomic(self.dir / "skipped.txt", "".join(f"{line}\n" for line in skipped))
        manifest = {**expected, "array": array_name, "files": files_name, "shape": [len(kept), *shape_one]}
        manifest["skipped"] = len(skipped)
        _write_atomic(self.dir / "manifest.json", json.dumps(manifest, indent=1))
        for old in [*self.dir.glob("images-*.u8"), *self.dir.glob("files-*.txt")]:  # open maps stay readable
            if old.name not in (array_name, files_name):
                old.unlink(missing_ok=True)
        if skipped:
            log.warning(
                "Skipped %d of %d files that are not readable images (first: %s); the list is in %s",
                len(skipped),
                len(self.paths),
                skipped[0].replace("\t", ": "),
                self.dir / "skipped.txt",
            )
        if not kept:
            raise FileNotFoundError(f"none of the {len(self.paths)} files under {self.root} is a readable image")
        return manifest

    def load_or_prepare(self, num_workers: int = 0) -> dict:
        """The manifest of a valid cache, preparing it first when it is missing or stale."""
        manifest = self.load_manifest()
        if manifest is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(self.dir / ".lock", "w") as lock:  # runs started together (a sweep) prepare once
                fcntl.flock(lock, fcntl.LOCK_EX)
                manifest = self.load_manifest() or self.prepare(num_workers)
        if manifest["shape"][0] == 0:
            raise FileNotFoundError(
                f"none of the {manifest['source_files']} files under {self.root} is a readable image"
            )
        return manifest

    def files(self, manifest: dict) -> list[str]:
        """The kept source files, relative to the root, in the order of the manifest's array."""
        return (self.dir / manifest["files"]).read_text().splitlines()


def _progress(loader: DataLoader, description: str):
    """The loader's batches with a progress bar (tqdm comes with Lightning)."""
    from tqdm import tqdm

    log.info(description)
    return tqdm(loader, desc="prepare", unit="batch", leave=False, mininterval=2.0)


class PreparedImages(Dataset):
    """The prepared array as a data set: item i -> uint8 [C, R, R] (and its label when `labels` is given).

    A list of indices returns a whole batch in one read (the training loader asks for batches).
    The memory map is opened lazily in each process, so forked workers share the pages.
    """

    batched = True

    def __init__(self, path: Path, shape: tuple[int, ...], labels: Tensor | None = None) -> None:
        self.path, self.shape, self.labels = Path(path), tuple(shape), labels
        self._array: np.memmap | None = None

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def array(self) -> np.memmap:
        if self._array is None:
            self._array = np.memmap(self.path, np.uint8, "r", shape=self.shape)
        return self._array

    def __getstate__(self) -> dict:  # workers started by spawn open their own map
        return {**self.__dict__, "_array": None}

    def tensors(self) -> tuple[Tensor, ...]:
        """The whole set in memory: (images uint8 [N, C, R, R],) plus labels [N] when labeled."""
        images = torch.from_numpy(np.array(self.array))
        return (images,) if self.labels is None else (images, self.labels)

    def __getitem__(self, index: int | list[int] | Tensor) -> Tensor | tuple[Tensor, Tensor]:
        if isinstance(index, Tensor):
            index = index.tolist()
        images = torch.from_numpy(np.array(self.array[index]))  # a copy: the map is read-only
        return images if self.labels is None else (images, self.labels[index])
