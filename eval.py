"""Score a checkpoint: `python eval.py ckpt_path=logs/train/runs/<time>/checkpoints/last.ckpt [metrics=...]`."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> dict:
    from gankit.evaluate import evaluate  # imported here so that `--help` answers at once

    return evaluate(cfg)


if __name__ == "__main__":
    main()
