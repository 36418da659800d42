"""Train the digits classifier shipped as src/gankit/metrics/weights/digits_cnn.pt (deterministic, CPU, ~1 min).

Split: of the 500 digits per class (stored sorted by label), the first 400 train and the last 100 are
held out; the script prints held-out accuracy. Random shifts of up to 2 pixels make it robust to the
small misalignments of generated digits.  Usage: python scripts/train_digits_classifier.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gankit.data.mnist import load_embedded_digits, to_unit_range
from gankit.metrics.digits import WEIGHTS, DigitsNet


def split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images, train labels, held-out images, held-out labels), images in [-1, 1] at 28x28."""
    images, labels = load_embedded_digits()
    x = to_unit_range(images, 28)
    held_out = torch.arange(len(labels)) % 500 >= 400  # last 100 of each class
    return x[~held_out], labels[~held_out], x[held_out], labels[held_out]


def shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Translate each image by a random integer offset (zero padding)."""
    padded = F.pad(x, [max_shift] * 4, value=-1.0)
    out = torch.empty_like(x)
    offsets = torch.randint(0, 2 * max_shift + 1, (len(x), 2), generator=generator)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy : dy + 28, dx : dx + 28]
    return out


@torch.no_grad()
def accuracy(net: DigitsNet, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    return (net.classify(x).argmax(1) == y).float().mean().item()


def main(epochs: int = 15, seed: int = 0) -> float:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train, x_test, y_test = split()
    net = DigitsNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=epochs * (len(x_train) // 64))
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order) - 63, 64):
            idx = order[start : start + 64]
            loss = F.cross_entropy(net.classify(shift(x_train[idx], generator)), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        print(f"epoch {epoch + 1}: held-out accuracy {accuracy(net, x_test, y_test):.4f}")
    WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), WEIGHTS)
    acc = accuracy(net, x_test, y_test)
    print(f"saved {WEIGHTS} (held-out accuracy {acc:.4f} on {len(y_test)} digits)")
    return acc


if __name__ == "__main__":
    main()
