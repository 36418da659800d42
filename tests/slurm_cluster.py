"""A throw-away SLURM cluster on this machine: slurmctld and two slurmd "nodes" (n1, n2) in a temporary folder.

Debian's slurm-wlm 22.05 and munge (`scripts/system_packages.sh` installs them); the recipe in
../shared/FIELD_NOTES.md. Each node has 4 CPUs (declared: `config_overrides`, this machine
has 2 cores), partition `cpu`; node names resolve to 127.0.0.1
(/etc/hosts: Lightning takes MASTER_ADDR from the first node of SLURM_NODELIST). Every daemon this
starts (in the foreground, so its pid is known) is stopped at the end, its jobs cancelled first;
munged is started only when `munge -n` fails, and left running.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "munge", "munged")
NODES = ("n1", "n2")


def missing() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not Path(f"/usr/sbin/{b}").exists()]


def _binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    folder: Path
    conf: Path
    daemons: list[subprocess.Popen] = field(default_factory=list)  # in the foreground (-D): ours to stop

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *args: str, check: bool = True, timeout: int = 30) -> subprocess.CompletedProcess:
        return subprocess.run(args, env={**os.environ, **self.env}, capture_output=True, text=True, check=check,
                              timeout=timeout)  # fmt: skip

    def idle_nodes(self) -> set[str]:
        result = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False)
        return {line.split()[0] for line in result.stdout.splitlines() if line.split()[1:] == ["idle"]}

    def wait_idle(self, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.idle_nodes() == set(NODES):
                return
            time.sleep(0.5)
        logs = "\n".join(p.read_text(errors="replace")[-1500:] for p in self.folder.glob("*.log"))
        raise RuntimeError(f"SLURM nodes not idle after {timeout:.0f} s:\n{logs}")

    def jobs(self) -> list[str]:
        """Job ids in the queue (any state)."""
        return self.run("squeue", "-h", "-o", "%i", check=False).stdout.split()

    def _steps_running(self) -> bool:
        nodes = self.run("scontrol", "show", "nodes", check=False).stdout
        return "State=MIXED" in nodes or "State=ALLOCATED" in nodes or "+COMPLETING" in nodes

    def stop(self) -> None:
        """Every job cancelled, then every daemon this started stopped (SIGTERM, then SIGKILL after 15 s)."""
        for job in self.jobs():
            self.run("scancel", job, check=False)
        end = time.monotonic() + 20  # the steps end while their slurmd lives (else a slurmstepd lingers)
        while time.monotonic() < end and (self.jobs() or self._steps_running()):
            time.sleep(0.2)
        for daemon in self.daemons:
            if daemon.poll() is None:
                daemon.terminate()
        for daemon in self.daemons:
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(timeout=15)


def _munge_running() -> bool:
    return subprocess.run(["munge", "-n"], capture_output=True).returncode == 0


def _start_munge() -> None:
    if _munge_running():
        return
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        shutil.chown(key, "munge", "munge")
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", _binary("munged"), "--force"], check=False, capture_output=True)
    if not _munge_running():
        subprocess.run([_binary("munged"), "--force"], check=True, capture_output=True)


def _hosts_resolve() -> None:
    """n1 and n2 -> 127.0.0.1 (appended to /etc/hosts once, where it can be written)."""
    hosts = Path("/etc/hosts")
    try:
        text = hosts.read_text()
        names = [n for n in NODES if not any(n in line.split()[1:] for line in text.splitlines() if line.strip())]
        if names:
            hosts.write_text(text.rstrip("\n") + f"\n127.0.0.1 {' '.join(names)}  # gankit's test SLURM\n")
    except OSError:  # a read-only /etc/hosts: the 2-node test says so (nodes_resolve)
        pass


def nodes_resolve() -> bool:
    """Whether n1 and n2 resolve (Lightning's rendezvous on a 2-node job needs it)."""
    try:
        return all(socket.gethostbyname(n) for n in NODES)
    except OSError:
        return False


def start(folder: Path) -> Cluster:
    """A cluster in `folder`, its nodes idle; raises RuntimeError if it does not come up."""
    if os.geteuid() != 0:
        raise PermissionError("the test cluster runs its daemons as root (SlurmUser=root)")
    _start_munge()
    _hosts_resolve()
    host = socket.gethostname().split(".")[0]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "state").mkdir(exist_ok=True)
    node_lines = "\n".join(
        f"NodeName={n} NodeHostname={host} Port={_free_port()} CPUs=4 RealMemory=4000 State=UNKNOWN" for n in NODES
    )
    conf = folder / "slurm.conf"
    conf.write_text(
        f"""ClusterName=gankit
SlurmctldHost={host}
SlurmctldPort={_free_port()}
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SlurmUser=root
SlurmdUser=root
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool.%n
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.%n.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.%n.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
SlurmdParameters=config_overrides
MinJobAge=30
{node_lines}
PartitionName=cpu Nodes={",".join(NODES)} Default=YES MaxTime=INFINITE State=UP
"""
    )
    cluster = Cluster(folder, conf)
    env = {**os.environ, **cluster.env}
    commands = {"slurmctld": [_binary("slurmctld"), "-D", "-f", str(conf)]}
    commands |= {f"slurmd.{node}": [_binary("slurmd"), "-D", "-f", str(conf), "-N", node] for node in NODES}
    try:
        for name, command in commands.items():  # -D: in the foreground, so the pid is the daemon's (else they fork)
            log = open(folder / f"{name}.out", "w")  # noqa: SIM115 - the daemon's, for its life
            cluster.daemons.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
        cluster.wait_idle()
    except Exception:
        cluster.stop()
        raise
    return cluster
