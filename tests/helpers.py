"""Callbacks used by tests through the command line (importable as tests.helpers)."""

import lightning as L
import torch


class ReplicaDigest(L.Callback):
    """Each rank saves its trainable weights, the labels it saw and its generator step count."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath, self.seen = dirpath, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen += batch[1].tolist() if isinstance(batch, (list, tuple)) else []

    def on_train_end(self, trainer, pl_module):
        params = {k: p.detach().cpu() for k, p in pl_module.named_parameters() if p.requires_grad}
        torch.save(
            {"params": params, "seen": self.seen, "g_steps": pl_module.g_steps},
            f"{self.dirpath}/weights_rank{trainer.global_rank}.pt",
        )


class SeenBatches(L.Callback):
    """Each rank saves the (epoch, real batch) pairs it trained on."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath, self.seen = dirpath, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        self.seen.append((trainer.current_epoch, images.detach().cpu().clone()))

    def on_train_end(self, trainer, pl_module):
        torch.save(self.seen, f"{self.dirpath}/seen_rank{trainer.global_rank}.pt")
