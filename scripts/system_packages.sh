#!/usr/bin/env bash
# Debian packages some tests use when present, installed when missing (as root, with apt-get; else the
# tests that need them skip with a reason): PostgreSQL for the Optuna RDB-storage test, SLURM and munge for
# the tests on a real scheduler (tests/slurm_cluster.py). `.ci/run` calls this.
set -uo pipefail
want=()
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || want+=(postgresql)
for tool in slurmctld slurmd sbatch munged; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { want+=(slurmctld slurmd slurm-client munge); break; }
done
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "system_packages: ${want[*]} missing (needs root and apt-get); the tests that use them will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null 2>&1 \
  || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null 2>&1; } \
  || echo "system_packages: could not install ${want[*]}; the tests that use them will skip" >&2
exit 0
