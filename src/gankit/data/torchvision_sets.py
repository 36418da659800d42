"""torchvision's small labeled sets (CIFAR-10, MNIST, FashionMNIST), held in memory as uint8.

These sets are a few hundred MB at most and torchvision already stores them as arrays, so they
skip the prepared cache: the arrays are resized once to the resolution, kept as uint8 tensors,
read a batch at a time, and can live on the accelerator (`on_device: true`).
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import TensorDataset

from gankit.data.base import GANDataModule
from gankit.data.prepared import fingerprint

SETS = {  # name -> (torchvision class, native channels, what to copy into root when offline)
    "cifar10": ("CIFAR10", 3, "cifar-10-python.tar.gz (www.cs.toronto.edu/~kriz/cifar.html), unpacked"),
    "mnist": ("MNIST", 1, "MNIST/raw/ with train-images-idx3-ubyte and train-labels-idx1-ubyte"),
    "fashion_mnist": ("FashionMNIST", 1, "FashionMNIST/raw/ with train-images-idx3-ubyte and train-labels-idx1-ubyte"),
}


def load_torchvision_set(name: str, root: Path, train: bool, download: bool, timeout_s: float = 30.0):
    """The torchvision data set, or one FileNotFoundError saying where it looked and how to get it."""
    import torchvision.datasets

    class_name, _, offline = SETS[name]  # the name was checked by TorchvisionDataModule
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)  # an unreachable mirror fails in seconds instead of hanging
    try:
        return getattr(torchvision.datasets, class_name)(str(root), train=train, download=download)
    except Exception as error:  # missing files, failed downloads, corrupt archives
        how = (
            f"download=true could not fetch it ({type(error).__name__}: {error})"
            if download
            else f"it is not there and data.download=false ({error})"
        )
        raise FileNotFoundError(
            f"data={name}: torchvision's {class_name} not found under data.root={root}: {how}. "
            f"On a machine with internet run once with data.download=true, or copy {offline} into {root}. "
            "Offline alternatives that ship with gankit: data=mnist (5,000 embedded digits), data=ring, data=grid."
        ) from error
    finally:
        socket.setdefaulttimeout(previous)


def resize_uint8(images: Tensor, resolution: int, batch: int = 4096) -> Tensor:
    """uint8 [N, C, H, W] -> uint8 [N, C, R, R] (bilinear with antialiasing, rounded); unchanged at R = H."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    out = [
        F.interpolate(part.float(), size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for part in images.split(batch)
    ]
    return torch.cat(out)


class TorchvisionDataModule(GANDataModule):
    """`name` (cifar10, mnist, fashion_mnist): the train split as uint8 [N, C, R, R] with its labels."""

    num_classes = 10

    def __init__(
        self,
        name: str,
        root: str,
        resolution: int = 32,
        channels: int | None = None,
        flip: bool = False,
        download: bool = True,
        num_classes: int | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        on_device: bool = False,
        limit: int | None = None,
        holdout: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory, limit, holdout, seed)
        if name not in SETS:
            raise ValueError(f"data.name={name!r} is not one of {', '.join(SETS)}")
        native = SETS[name][1]
        self.channels = native if channels is None else channels
        if self.channels not in (1, 3):
            raise ValueError(f"data.channels must be 1 or 3, got {self.channels}")
        self.name, self.root, self.resolution = name, Path(root).expanduser(), resolution
        self.flip, self.download, self.on_device = flip, download, on_device
        self.check_num_classes(num_classes)

    def prepare_data(self) -> None:
        """Once per node: download when allowed (torchvision skips files already there)."""
        load_torchvision_set(self.name, self.root, True, self.download)

    def source(self) -> dict:
        import torchvision.datasets

        class_name = SETS[self.name][0]
        folder = self.root / getattr(getattr(torchvision.datasets, class_name), "base_folder", class_name)
        files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
        return {
            "source": f"torchvision.datasets.{class_name}",
            "name": self.name,
            "root": str(self.root.resolve()),
            "fingerprint": fingerprint(folder, files),
            "preprocessing": "grey <-> RGB by repetition / ITU-R 601 luma; bilinear antialiased resize, rounded",
        }

    def build_train_set(self) -> TensorDataset:
        data = load_torchvision_set(self.name, self.root, True, download=False)
        pixels = torch.as_tensor(np.asarray(data.data))  # CIFAR [N, H, W, 3], MNIST [N, H, W]
        images = pixels.permute(0, 3, 1, 2) if pixels.ndim == 4 else pixels[:, None]
        if images.shape[1] != self.channels:  # grey -> RGB repeats; RGB -> grey by luma (ITU-R 601)
            if self.channels == 3:
                images = images.expand(-1, 3, -1, -1)
            else:
                weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
                images = (images.float() * weights).sum(1, keepdim=True).round_().to(torch.uint8)
        images = resize_uint8(images.contiguous(), self.resolution)
        return TensorDataset(images, torch.as_tensor(np.asarray(data.targets), dtype=torch.long))
