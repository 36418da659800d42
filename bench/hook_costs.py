"""Where a batch's time goes outside the GAN step: each callback hook and Lightning's logger bookkeeping, timed.

    python bench/hook_costs.py                         # the 2D MLP GAN (ring), 1,000 batches, default callbacks
    python bench/hook_costs.py --case dcgan_mnist32 --batches 200

One fit of gankit with the default callbacks except evaluation (as in bench/step_overhead.py), with
a clock around the training step, each callback's batch hooks, each dispatch of a hook to all
callbacks (Lightning calls every callback's method, implemented or not), and the logger connector's
per-batch work. Prints milliseconds per batch, largest first. What the table does not list is
Lightning's fit loop itself (fetching, progress counters, the module's hooks). One-off work
(the first picture, the epoch's checkpoints) is spread over the batches of this one epoch.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import lightning.pytorch.trainer.call as call
import torch
from hydra.utils import instantiate

sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_overhead import CASES, ListData, batches, compose_cfg  # noqa: E402

from gankit.training import instantiate_group  # noqa: E402

BATCH_HOOKS = ("on_train_batch_start", "on_train_batch_end", "on_before_optimizer_step", "on_after_backward")


def timed(seconds: dict, key: str, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[key] += time.perf_counter() - start

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="mlp_ring", choices=[c for c in CASES if not c.endswith("_gpu")])
    parser.add_argument("--batches", type=int, default=1000)
    args = parser.parse_args()
    seconds: dict[str, float] = collections.defaultdict(float)
    dispatch = call._call_callback_hooks

    def timed_dispatch(trainer, hook: str, *args, **kwargs):
        start = time.perf_counter()
        try:
            return dispatch(trainer, hook, *args, **kwargs)
        finally:
            seconds[f"dispatch to all callbacks: {hook}"] += time.perf_counter() - start

    call._call_callback_hooks = timed_dispatch
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_cfg(CASES[args.case], Path(tmp))
        data, dm = batches(cfg, torch.device("cpu"), args.batches)
        module = instantiate(cfg.model)
        module.training_step = timed(seconds, "the GAN step (module.training_step)", module.training_step)
        callbacks = instantiate_group(cfg.callbacks)
        for callback in callbacks:
            for hook in BATCH_HOOKS:
                if getattr(type(callback), hook) is not getattr(L.Callback, hook):  # implemented by this callback
                    setattr(
                        callback, hook, timed(seconds, f"  {type(callback).__name__}.{hook}", getattr(callback, hook))
                    )
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=len(data) * (module.n_critic + 1),
            max_epochs=1,
            logger=L.pytorch.loggers.CSVLogger(tmp),
            log_every_n_steps=20,
            callbacks=callbacks,
            enable_model_summary=False,
            default_root_dir=tmp,
        )
        connector = trainer._logger_connector
        for name in ("on_batch_start", "on_batch_end", "update_train_step_metrics"):
            setattr(connector, name, timed(seconds, f"logger connector: {name}", getattr(connector, name)))
        start = time.perf_counter()
        trainer.fit(module, datamodule=ListData(data, dm))
        total = time.perf_counter() - start
    n = len(data)
    step = seconds["the GAN step (module.training_step)"]
    print(
        f"{args.case}: {n} batches, {total / n * 1e3:.3f} ms each, {(total - step) / n * 1e3:.3f} ms outside the step\n"
    )
    print("| ms per batch | what |\n|---|---|")
    for key, value in sorted(seconds.items(), key=lambda kv: -kv[1]):
        print(f"| {value / n * 1e3:.4f} | {key} |")


if __name__ == "__main__":
    main()
