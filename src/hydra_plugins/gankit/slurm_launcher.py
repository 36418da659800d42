"""gankit's SLURM launcher (`hydra/launcher=slurm`): submitit's, with a submission SLURM refuses ended by one
message naming sbatch's error and the setting to change (gankit.slurm), not a submitit traceback."""

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher

from gankit.slurm import sbatch_message


class SlurmLauncher(SubmititSlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from submitit.core.utils import FailedJobError

        try:
            return super().launch(job_overrides, initial_job_idx)
        except FailedJobError as error:  # raised by the sbatch call only (a job's own failure is its JobReturn)
            if "sbatch: error" not in str(error):
                raise
            raise SystemExit(sbatch_message(str(error))) from None
