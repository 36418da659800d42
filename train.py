"""Train a GAN: `python train.py model=dcgan data=celeba data.root=/path` (see README.md)."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from gankit.training import train  # imported here so that `--help` answers at once

    return train(cfg)


if __name__ == "__main__":
    main()
