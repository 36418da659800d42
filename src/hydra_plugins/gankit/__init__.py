"""gankit's Hydra plugins (Hydra instantiates plugins only from the `hydra_plugins` namespace): the Optuna
sweeper and the SLURM launcher. Loading them also registers gankit's config resolvers (gankit.resolvers)."""

from gankit.resolvers import register

register()
