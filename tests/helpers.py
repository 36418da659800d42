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
        buffers = {k: b.detach().cpu() for k, b in pl_module.named_buffers()}
        torch.save(
            {"params": params, "buffers": buffers, "seen": self.seen, "g_steps": pl_module.g_steps},
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


class LatentProbe(L.Callback):
    """Each rank saves the training latents it drew (the evaluation's come from their own generator)."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath, self.drawn = dirpath, []

    def on_fit_start(self, trainer, pl_module):
        draw = pl_module.sample_latent

        def recording(n, generator=None):
            z = draw(n, generator)
            if generator is None:
                self.drawn.append(z.detach().cpu().clone())
            return z

        pl_module.sample_latent = recording

    def on_train_end(self, trainer, pl_module):
        torch.save(self.drawn, f"{self.dirpath}/latents_rank{trainer.global_rank}.pt")


class ConfigProbe(L.Callback):
    """Each rank saves which loss it trains with and where it writes (its run directory)."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = dirpath

    def on_train_end(self, trainer, pl_module):
        record = {"loss": pl_module.loss_name, "root": trainer.default_root_dir, "world": trainer.world_size}
        torch.save(record, f"{self.dirpath}/config_rank{trainer.global_rank}.pt")


class PoisonRank(L.Callback):
    """Makes one rank's discriminator loss NaN from a given batch on (a divergence on that rank alone)."""

    def __init__(self, rank: int = 1, from_batch: int = 1) -> None:
        self.rank, self.from_batch = rank, from_batch

    def on_fit_start(self, trainer, pl_module):
        if trainer.global_rank != self.rank:
            return
        step = pl_module.training_step

        def poisoned(batch, batch_idx):
            out = step(batch, batch_idx)
            if batch_idx >= self.from_batch:
                out["d_loss"] = torch.tensor(float("nan"))
            return out

        pl_module.training_step = poisoned
