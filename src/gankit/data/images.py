"""Folders of image files: any folder (recursively) and CelebA's aligned faces.

By default (`cache: true`) the images are decoded once into the prepared cache
(gankit.data.prepared) and training reads uint8 batches from a memory map; flips and the
conversion to [-1, 1] happen on the batch's device (GANDataModule.on_after_batch_transfer).
`on_device: true` keeps the whole prepared set on the accelerator. `cache: false` decodes every
image at every step (for sets too large to prepare); an unreadable file is then replaced by
another image with a warning, never a crash mid-epoch.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from gankit.data.base import GANDataModule
from gankit.data.prepared import BadImage, PreparedCache, PreparedImages, Preprocessing, folder_identity, load_image

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def list_images(root: Path) -> list[Path]:
    """Image files under `root`, recursively, in a stable (sorted) order."""
    found = []
    for folder, _, files in os.walk(root, followlinks=True):
        found += [Path(folder, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


class ImageFiles(Dataset):
    """Streaming: each item decoded when asked (uint8 [C, R, R]); a bad file yields the next good one."""

    def __init__(self, paths: list[Path], prep: Preprocessing) -> None:
        self.paths, self.prep = paths, prep

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        for attempt in range(len(self.paths)):
            path = self.paths[(index + attempt) % len(self.paths)]
            try:
                return torch.from_numpy(load_image(path, self.prep))
            except BadImage as error:
                log.warning("Skipping unreadable image %s (%s)", path, error)
        raise FileNotFoundError("none of the images in the data set is readable")


class ImageFolderDataModule(GANDataModule):
    """Every image under `root` (jpg, jpeg, png, webp, bmp), center-cropped to a square and resized."""

    def __init__(
        self,
        root: str,
        resolution: int = 64,
        channels: int = 3,
        crop: int | None = None,
        flip: bool = False,
        num_classes: int | None = None,
        batch_size: int = 64,
        num_workers: int = 4,
        pin_memory: bool | None = None,
        cache: bool = True,
        cache_dir: str = "~/.cache/gankit/data",
        on_device: bool = False,
        limit: int | None = None,
        holdout: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory, limit, holdout, seed)
        self.prep = Preprocessing(resolution, channels, crop)
        self.resolution, self.channels, self.crop, self.flip = resolution, channels, crop, flip
        if on_device and not cache:
            raise ValueError("data.on_device=true keeps the prepared cache on the device: it needs data.cache=true")
        self.cache_enabled, self.on_device = cache, on_device
        self.root, self.cache_dir = Path(root).expanduser(), Path(cache_dir)
        self.check_num_classes(num_classes)
        self.paths: list[Path] | None = None
        if not self.downloads:
            self.find_files()  # at start: a missing folder fails before anything is built

    downloads = False  # True: the files arrive in prepare_data (rank 0, behind Lightning's barrier)

    def find_files(self) -> None:
        """List the images, take their identity (stats every file, once) and name their cache."""
        self.paths = self.find_images(self.root)
        self.check_size(len(self.paths))
        self._source = folder_identity(self.image_root, self.paths, self.prep)
        self.cache = PreparedCache(
            self.image_root, self.paths, self.prep, self.cache_dir, type(self).__name__, self.identity()
        )

    def source(self) -> dict:
        return self._source

    @property
    def image_root(self) -> Path:
        """The folder the image paths are relative to (in the cache's file list)."""
        return self.root

    def find_images(self, root: Path) -> list[Path]:
        """The files to train on; raises a message naming the folder when there are none."""
        if not root.is_dir():
            raise FileNotFoundError(f"data.root={root} is not a folder. Set data.root to a folder of images.")
        paths = list_images(root)
        if not paths:
            raise FileNotFoundError(
                f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under data.root={root}, searched recursively."
            )
        return paths

    def prepare_data(self) -> None:
        """Once per node (Lightning calls it on local rank 0): download if asked, build the cache if
        missing or stale."""
        if self.downloads:
            self.download_files()
            self.find_files()
        if self.cache_enabled:
            self.cache.load_or_prepare(self.num_workers)

    def download_files(self) -> None:
        raise NotImplementedError

    def build_train_set(self) -> Dataset:
        if self.paths is None:  # a rank > 0 of a downloading set: the files are there now
            self.find_files()
        if not self.cache_enabled:
            return ImageFiles(self.paths, self.prep)
        manifest = self.cache.load_or_prepare(self.num_workers)
        labels = self.labels_for(self.cache.files(manifest))
        return PreparedImages(self.cache.dir / manifest["array"], manifest["shape"], labels)

    def labels_for(self, files: list[str]) -> Tensor | None:
        """Class labels of the kept files (relative paths), or None for an unlabeled set."""
        return None


class CelebADataModule(ImageFolderDataModule):
    """CelebA aligned faces (178x218): center crop `crop` (default the full width) then resize.

    `root` may hold torchvision's layout (`celeba/img_align_celeba/*.jpg` with the list files in
    `celeba/`), the folder `img_align_celeba/` itself, or be a bare folder of the JPEGs as in the
    common mirrors. `attributes: [Male, Smiling]` turns the binary attributes of
    `list_attr_celeba.txt` into 2^k class labels (bit j = attribute j) for conditional models.
    """

    LAYOUTS = ("celeba/img_align_celeba", "img_align_celeba", ".")
    ATTRIBUTE_FILE = "list_attr_celeba.txt"

    def __init__(
        self,
        root: str,
        resolution: int = 64,
        channels: int = 3,
        crop: int | None = 178,
        flip: bool = True,
        attributes: list[str] | None = None,
        download: bool = False,
        **kwargs,
    ) -> None:
        self.attributes = list(attributes or [])
        if self.attributes:
            self.num_classes = 2 ** len(self.attributes)
        self.downloads = download
        super().__init__(root, resolution, channels, crop, flip, **kwargs)
        if self.attributes and not download:
            self.attribute_table()  # fail at start when the list file or a name is missing

    def download_files(self) -> None:
        download_celeba(self.root)

    def find_images(self, root: Path) -> list[Path]:
        for layout in self.LAYOUTS:
            folder = root / layout
            if folder.is_dir() and (paths := sorted(folder.glob("*.jpg"))):
                self._image_root = folder
                return paths
        looked = ", ".join(str(root / layout / "*.jpg") for layout in self.LAYOUTS)
        raise FileNotFoundError(
            f"no CelebA images found under data.root={root}: looked for {looked}. Either layout works: "
            "torchvision's (celeba/img_align_celeba/*.jpg with list_attr_celeba.txt in celeba/) or a bare "
            "folder of the aligned JPEGs. Get img_align_celeba.zip from the CelebA page "
            "(mmlab.ie.cuhk.edu.hk/projects/CelebA.html), unzip it under data.root and run again, or let "
            "torchvision fetch it with data.download=true where the network allows."
        )

    @property
    def image_root(self) -> Path:
        return self._image_root

    def attribute_table(self) -> tuple[list[str], dict[str, list[int]]]:
        """(attribute names, file name -> +-1 values) from list_attr_celeba.txt next to the images."""
        places = [self._image_root.parent / self.ATTRIBUTE_FILE, self._image_root / self.ATTRIBUTE_FILE]
        path = next((p for p in places if p.is_file()), None)
        if path is None:
            raise FileNotFoundError(
                f"data.attributes={self.attributes} needs {self.ATTRIBUTE_FILE}; looked for "
                f"{' and '.join(map(str, places))}. Put CelebA's list file there, or set data.attributes=null."
            )
        lines = path.read_text().splitlines()
        names = lines[1].split()
        missing = [a for a in self.attributes if a not in names]
        if missing:
            raise ValueError(f"data.attributes: {missing} not in {path.name}; known: {', '.join(names)}")
        table = {}
        for line in lines[2:]:
            fields = line.split()
            if fields:
                table[fields[0]] = [int(v) for v in fields[1:]]
        return names, table

    def labels_for(self, files: list[str]) -> Tensor | None:
        if not self.attributes:
            return None
        names, table = self.attribute_table()
        columns = [names.index(a) for a in self.attributes]
        unlisted = [f for f in files if Path(f).name not in table]
        if unlisted:
            raise ValueError(f"{len(unlisted)} images have no row in {self.ATTRIBUTE_FILE} (first: {unlisted[0]})")
        bits = torch.tensor([[table[Path(f).name][c] > 0 for c in columns] for f in files], dtype=torch.long)
        return (bits << torch.arange(len(columns))).sum(1)


def download_celeba(root: Path, timeout_s: float = 30.0) -> None:
    """torchvision's CelebA downloader (Google Drive) into root/celeba; one clear error when it fails."""
    from torchvision.datasets import CelebA

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        CelebA(str(root), split="all", target_type="attr", download=True)
    except Exception as error:  # network errors, quota pages, bad archives: all end the same way
        raise FileNotFoundError(
            f"data.download=true could not fetch CelebA into {root / 'celeba'} ({type(error).__name__}: {error}). "
            "Download img_align_celeba.zip and list_attr_celeba.txt by hand (mmlab.ie.cuhk.edu.hk/projects/"
            "CelebA.html), put them under that folder, and run with data.download=false."
        ) from error
    finally:
        socket.setdefaulttimeout(previous)
