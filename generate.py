"""Look inside a generator: `python generate.py ckpt_path=logs/train/runs/<time>/checkpoints/last.ckpt`."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    from gankit.generate import generate  # imported here so that `--help` answers at once

    generate(cfg)


if __name__ == "__main__":
    main()
