"""Folders of image files: any folder (recursively) and CelebA's aligned faces."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from gankit.data.base import GANDataModule

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def list_images(root: Path) -> list[Path]:
    """Image files under `root`, recursively, in a stable (sorted) order."""
    found = []
    for folder, _, files in os.walk(root, followlinks=True):
        found += [Path(folder, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def image_transform(resolution: int, channels: int, crop: int | None = None, flip: bool = False) -> v2.Compose:
    """uint8 image -> float [C, R, R] in [-1, 1]: optional center crop, resize, center crop, optional flip."""
    steps = [v2.CenterCrop(crop)] if crop else []
    steps += [v2.Resize(resolution, antialias=True), v2.CenterCrop(resolution)]
    steps += [v2.RandomHorizontalFlip()] if flip else []
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * channels, [0.5] * channels)]
    return v2.Compose(steps)


class ImageFiles(Dataset):
    """Unlabeled images decoded with PIL, converted to RGB (3 channels) or grayscale (1)."""

    def __init__(self, paths: list[Path], transform: v2.Compose, channels: int) -> None:
        self.paths, self.transform = paths, transform
        self.mode = {1: "L", 3: "RGB"}[channels]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        with Image.open(self.paths[index]) as image:
            pixels = v2.functional.pil_to_tensor(image.convert(self.mode))  # uint8 [C, H, W]
        return self.transform(pixels)


class ImageFolderDataModule(GANDataModule):
    """Every image under `root` (jpg, jpeg, png, webp, bmp), resized and center-cropped to a square."""

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
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        self.check_num_classes(num_classes)
        if channels not in (1, 3):
            raise ValueError(f"data.channels must be 1 (grayscale) or 3 (RGB), got {channels}")
        self.resolution, self.channels, self.crop, self.flip = resolution, channels, crop, flip
        self.paths = self.find_images(Path(root).expanduser())
        self.check_size(len(self.paths))

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

    def build_train_set(self) -> ImageFiles:
        transform = image_transform(self.resolution, self.channels, self.crop, self.flip)
        return ImageFiles(self.paths, transform, self.channels)


class CelebADataModule(ImageFolderDataModule):
    """CelebA aligned faces (178x218): center crop `crop` (default the full width) then resize.

    `root` may hold torchvision's layout (`celeba/img_align_celeba/*.jpg`), the folder
    `img_align_celeba/` itself, or be a bare folder of the JPEGs as in the common mirrors.
    """

    LAYOUTS = ("celeba/img_align_celeba", "img_align_celeba", ".")

    def __init__(
        self, root: str, resolution: int = 64, channels: int = 3, crop: int | None = 178, flip: bool = True, **kwargs
    ) -> None:
        super().__init__(root, resolution, channels, crop, flip, **kwargs)

    def find_images(self, root: Path) -> list[Path]:
        for layout in self.LAYOUTS:
            folder = root / layout
            if folder.is_dir() and (paths := sorted(folder.glob("*.jpg"))):
                return paths
        looked = ", ".join(str(root / layout / "*.jpg") for layout in self.LAYOUTS)
        raise FileNotFoundError(
            f"no CelebA images found under data.root={root}: looked for {looked}. Download the aligned "
            "faces (img_align_celeba.zip) from the CelebA page, unzip it under data.root, and run again "
            "with data.root=/path/to/that/folder."
        )
