"""A small CNN classifier of MNIST digits: penultimate features for a domain FID, predictions for mode counts.

Trained deterministically on 4,000 of the 5,000 embedded digits by `scripts/train_digits_classifier.py`;
the weights ship with the package (`weights/digits_cnn.pt`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

WEIGHTS = Path(__file__).parent / "weights" / "digits_cnn.pt"


class DigitsNet(nn.Module):
    """Images [N, 1, H, W] in [-1, 1] (any size; resized to 28x28) -> features [N, 128] or logits [N, 10]."""

    num_features = 128  # read by torchmetrics' FID / KID instead of a dummy forward pass

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 7 * 7, self.num_features), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(self.num_features, 10)

    def forward(self, x: Tensor) -> Tensor:
        """Penultimate features [N, 128]."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(
                f"the digits features take grayscale digits [N, 1, H, W]; got {list(x.shape)}. "
                "Use metrics=inception for other images."
            )
        if x.shape[-2:] != (28, 28):
            x = F.interpolate(x.float(), size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
        return self.trunk(x.float())

    def classify(self, x: Tensor) -> Tensor:
        """Class logits [N, 10]."""
        return self.head(self.forward(x))


def load_digits_net(path: Path = WEIGHTS) -> DigitsNet:
    """The shipped classifier, in eval mode, without gradients."""
    net = DigitsNet()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval().requires_grad_(False)
