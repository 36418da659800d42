"""Prepare a data set ahead of training: `python prepare.py data=celeba data.root=/data [data.resolution=128]`.

Decodes the images once into the prepared cache (or downloads a torchvision set) and prints what
was kept and skipped. Training does the same on first use; this lets a cluster job start warm.
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="prepare")
def main(cfg: DictConfig) -> None:
    from gankit.training import prepare  # imported here so that `--help` answers at once

    prepare(cfg)


if __name__ == "__main__":
    main()
