"""Where Hydra finds gankit's Optuna sweeper: Hydra instantiates plugins only from the `hydra_plugins`
namespace (`hydra/sweeper=optuna`: conf/hydra/sweeper/optuna.yaml). The sweeper is gankit.sweeper."""

from gankit.sweeper import StudySweeper


class OptunaSweeper(StudySweeper):
    """gankit.sweeper.StudySweeper, under the name Hydra's plugin loader accepts."""
