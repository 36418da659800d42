"""gankit's OmegaConf resolvers, registered when Hydra loads gankit's plugins (src/hydra_plugins/gankit):
before any config is composed, in every entry point."""

from __future__ import annotations

from omegaconf import OmegaConf

from gankit import slurm

RESOLVERS = {
    "gankit.whole": slurm.whole,  # ${gankit.whole:${trainer.devices}}: the number (auto, a list: refused at start)
    "gankit.gpus_per_node": slurm.gpus_per_node,  # ${gankit.gpus_per_node:${trainer.accelerator},${trainer.devices}}
    "gankit.cpus_per_task": slurm.cpus_per_task,  # ${gankit.cpus_per_task:${trainer.accelerator}}
}


def register() -> None:
    for name, function in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)
