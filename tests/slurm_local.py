"""A real single-node SLURM (slurmctld + slurmd + munged) on localhost, for the tests.

Used by the session fixture ``slurm_cluster`` in ``conftest.py``; also a script for trying
things by hand::

    python tests/slurm_local.py /tmp/slurm    # starts the daemons, prints SLURM_CONF, Ctrl-C stops

Needs root and Debian's ``slurm-wlm`` and ``munge`` packages (installed with apt-get when
missing; CI installs them in ``.ci/run``). Everything lives under one folder: its own munge key
and socket, a ``slurm.conf`` for one node of 2 CPUs (and one GPU declared as a generic
resource, with no device behind it, so ``--gres=gpu:1`` jobs can be scheduled on a machine
without a GPU), state, spool and logs, on free ports. The daemons run in the foreground as
our children and are stopped by PID, never by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")


class SlurmUnavailable(RuntimeError):
    """The daemons cannot be installed or started here (the message says why)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sbin(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.path.exists(p)), None)


def ensure_installed() -> None:
    """Install slurm-wlm and munge with apt-get if a daemon is missing.

    Raises
    ------
    SlurmUnavailable
        Not root, no apt-get, or the install failed.
    """
    if all(_sbin(d) for d in DAEMONS) and shutil.which("sbatch"):
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable("slurm-wlm/munge are not installed and installing them needs root")
    if not shutil.which("apt-get"):
        raise SlurmUnavailable("slurm-wlm/munge are not installed and there is no apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"]):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if r.returncode != 0:
            raise SlurmUnavailable(f"{' '.join(cmd)} failed: {r.stderr.strip()[-500:]}")
    if not all(_sbin(d) for d in DAEMONS):
        raise SlurmUnavailable("slurm-wlm/munge installed but a daemon is still missing")


class LocalSlurm:
    """Start and stop a one-node SLURM under ``root``.

    Attributes
    ----------
    conf : Path
        The ``slurm.conf``; clients find it through ``SLURM_CONF``.
    env : dict
        ``{"SLURM_CONF": str(conf)}``.
    node : str
        Node name (the short host name).
    """

    def __init__(self, root: Path, cpus: int = 2):
        self.root = Path(root)
        self.cpus = cpus
        self.procs: dict[str, subprocess.Popen] = {}
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.env = {"SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        r = self.root
        for d in ("state", "spool", "log", "munge"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        self.socket = r / "munge" / "munge.socket"
        ctld_port, d_port = _free_port(), _free_port()
        self.conf.write_text(f"""\
ClusterName=ptyhpctest
SlurmctldHost={self.node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=3600
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
GresTypes=gpu
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=8000 Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        # A GPU generic resource with no device file: schedulable, nothing is bound.
        (r / "gres.conf").write_text(f"NodeName={self.node} Name=gpu File=/dev/null Count=1\n")

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.stdout", "w")
        self.procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env={**os.environ, **self.env}, start_new_session=True)

    def start(self, timeout_s: float = 60) -> "LocalSlurm":
        """Start munged, slurmctld and slurmd; wait until the node is idle.

        Raises
        ------
        SlurmUnavailable
            A daemon exited or the node did not come up in ``timeout_s``
            (the message carries the end of the daemons' logs).
        """
        ensure_installed()
        if os.geteuid() != 0:
            raise SlurmUnavailable("running slurmd needs root")
        self._write_config()
        r = self.root
        self._spawn("munged", [_sbin("munged"), "-F", "--force", f"--socket={self.socket}",
                               f"--key-file={r}/munge/munge.key", f"--pid-file={r}/munge/munged.pid",
                               f"--log-file={r}/log/munged.log", f"--seed-file={r}/munge/munged.seed"])
        self._wait(lambda: self.socket.exists(), 20, "munged socket")
        self._spawn("slurmctld", [_sbin("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: self._run(["scontrol", "ping"]).returncode == 0
                   and "UP" in self._run(["scontrol", "ping"]).stdout, 30, "slurmctld")
        self._spawn("slurmd", [_sbin("slurmd"), "-D", "-N", self.node, "-f", str(self.conf)])
        self._wait(lambda: self._node_state() in ("IDLE", "MIXED"), timeout_s, "slurmd (node idle)")
        return self

    def _run(self, cmd):
        return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **self.env}, timeout=30)

    def _node_state(self) -> str:
        out = self._run(["sinfo", "-h", "-N", "-o", "%T"]).stdout.strip().upper()
        return out.rstrip("*~#")

    def _wait(self, ok, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise SlurmUnavailable(f"{name} exited with {p.returncode}: {self.logs()}")
            try:
                if ok():
                    return
            except (OSError, subprocess.SubprocessError):
                pass
            time.sleep(0.3)
        raise SlurmUnavailable(f"{what} not ready after {timeout_s:.0f} s: {self.logs()}")

    def logs(self, chars: int = 1500) -> str:
        """The end of every daemon log (for error messages)."""
        parts = []
        for f in sorted((self.root / "log").glob("*")):
            text = f.read_text(errors="replace")[-chars:]
            if text.strip():
                parts.append(f"--- {f.name}\n{text}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel any job left, then stop the daemons by PID (slurmd, slurmctld, munged)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            try:
                self._run(["scancel", "--full", "--user=root"])
            except (OSError, subprocess.SubprocessError):
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self.procs.clear()


if __name__ == "__main__":  # pragma: no cover
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/ptyhpc-slurm")
    folder.mkdir(parents=True, exist_ok=True)
    s = LocalSlurm(folder).start()
    print(f"export SLURM_CONF={s.conf}", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        s.stop()
