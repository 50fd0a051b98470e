"""A single-node Slurm cluster on localhost for the tests, from Debian's packages (slurm-wlm, munge, slurmdbd,
mariadb-server; `.ci/engines.sh` installs them): munged, MariaDB, slurmdbd (so that `sacct` answers, which
submitit reads job states from), slurmctld and slurmd, all as root, every file in one folder owned by the test,
every daemon on 127.0.0.1 with free ports, one partition `debug`. Clients find it through `SLURM_CONF`.

    cluster = SlurmCluster(tmp_path / "slurm"); cluster.start()   # ~10-20 s
    subprocess.run(["sinfo"], env={**os.environ, **cluster.env})
    cluster.stop()                                                 # cancels its jobs, stops every daemon

`missing()` says why a cluster cannot be started here (not root, a binary missing), else "".
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd", "sacctmgr", "sbatch",
            "srun", "sacct", "squeue", "sinfo", "scancel")
PARTITION = "debug"


def missing() -> str:
    if os.name != "posix" or os.geteuid() != 0:
        return "the Slurm test starts its daemons as root (CI runs as root)"
    gone = [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    return f"not installed: {', '.join(gone)} (.ci/engines.sh installs them as root)" if gone else ""


def _which(b: str) -> str:
    return shutil.which(b) or str(Path("/usr/sbin", b))


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class SlurmCluster:
    def __init__(self, root: Path, cluster_name: str = "strbenchtest"):
        self.root = Path(root)
        self.name = cluster_name
        self.procs: dict[str, subprocess.Popen] = {}
        self.conf = self.root / "slurm.conf"
        self.env = {"SLURM_CONF": str(self.conf)}

    # ------------------------------------------------------------------ helpers
    def _log(self, name: str):
        return open(self.root / "log" / f"{name}.out", "ab")

    def _spawn(self, name: str, cmd: list[str], env: dict | None = None) -> None:
        self.procs[name] = subprocess.Popen(cmd, stdout=self._log(name), stderr=subprocess.STDOUT,
                                            env={**os.environ, **self.env, **(env or {})}, start_new_session=True)

    def client(self, *cmd: str, check: bool = True, timeout: float = 60) -> str:
        r = subprocess.run(list(cmd), capture_output=True, text=True, env={**os.environ, **self.env},
                           timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
        return r.stdout

    def _wait(self, what: str, ok, timeout: float) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited ({p.returncode}) while waiting for {what}: "
                                       f"{self.tail(name)}")
            try:
                if ok():
                    return
            except (OSError, RuntimeError, subprocess.SubprocessError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"timed out waiting for {what}: {self.tail()}")

    def tail(self, name: str | None = None, n: int = 2000) -> str:
        names = [name] if name else list(self.procs)
        out = []
        for nm in names:
            for f in (self.root / "log").glob(f"{nm}*"):
                out.append(f"--- {f.name}\n{f.read_text(errors='replace')[-n:]}")
        return "\n".join(out)

    # ------------------------------------------------------------------ start / stop
    def start(self) -> "SlurmCluster":
        r = self.root
        for d in ("log", "state", "spool", "munge", "db", "run"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r, 0o755)
        p_db, p_dbd, p_ctld, p_d = _free_ports(4)
        # munge: its own key and socket
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o400)
        sock = r / "munge" / "munge.socket"
        self._spawn("munged", [_which("munged"), "-F", "--force", f"--socket={sock}", f"--key-file={key}",
                               f"--pid-file={r / 'munge' / 'munged.pid'}", f"--log-file={r / 'log' / 'munged.log'}",
                               f"--seed-file={r / 'munge' / 'munged.seed'}"])
        self._wait("munged", sock.exists, 30)
        # MariaDB for slurmdbd
        db = r / "db" / "data"
        subprocess.run([_which("mariadb-install-db"), "--no-defaults", f"--datadir={db}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"],
                       check=True, stdout=self._log("mariadb-install"), stderr=subprocess.STDOUT, timeout=300)
        dbsock = r / "db" / "mysql.sock"
        self._spawn("mariadbd", [_which("mariadbd"), "--no-defaults", f"--datadir={db}", "--user=root",
                                 "--bind-address=127.0.0.1", f"--port={p_db}", f"--socket={dbsock}",
                                 f"--pid-file={r / 'db' / 'mariadbd.pid'}", f"--log-error={r / 'log' / 'mariadbd.log'}",
                                 "--skip-name-resolve", "--innodb-buffer-pool-size=32M", "--skip-log-bin",
                                 "--innodb-log-file-size=8M", "--performance-schema=OFF"])
        self._wait("mariadbd", lambda: socket.create_connection(("127.0.0.1", p_db), timeout=1).close() is None, 120)
        auth = f"AuthType=auth/munge\nAuthInfo=socket={sock}\n"
        dbd_conf = r / "slurmdbd.conf"
        dbd_conf.write_text(
            f"{auth}DbdHost=localhost\nDbdAddr=127.0.0.1\nDbdPort={p_dbd}\nSlurmUser=root\n"
            f"StorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\nStoragePort={p_db}\nStorageUser=root\n"
            f"StorageLoc=slurm_acct_db\nPidFile={r / 'run' / 'slurmdbd.pid'}\nLogFile={r / 'log' / 'slurmdbd.log'}\n")
        dbd_conf.chmod(0o600)
        node = self._node_line()
        self.conf.write_text(
            f"ClusterName={self.name}\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort={p_ctld}\n"
            f"SlurmdPort={p_d}\nSlurmUser=root\nSlurmdUser=root\n{auth}CredType=cred/munge\n"
            f"StateSaveLocation={r / 'state'}\nSlurmdSpoolDir={r / 'spool'}\n"
            f"SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}\nSlurmdPidFile={r / 'run' / 'slurmd.pid'}\n"
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}\nSlurmdLogFile={r / 'log' / 'slurmd.log'}\n"
            "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nJobAcctGatherType=jobacct_gather/none\n"
            "MpiDefault=none\nSchedulerType=sched/backfill\nSelectType=select/cons_tres\n"
            "SelectTypeParameters=CR_Core_Memory\nReturnToService=2\nKillWait=10\nMinJobAge=300\n"
            "SchedulerParameters=sched_interval=2\n"
            f"AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost\n"
            f"AccountingStoragePort={p_dbd}\nAccountingStoragePass={sock}\n"
            f"{node}\nPartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n")
        self._spawn("slurmdbd", [_which("slurmdbd"), "-D"])
        self._wait("slurmdbd", lambda: socket.create_connection(("127.0.0.1", p_dbd), timeout=1).close() is None,
                   120)
        self.client("sacctmgr", "-i", "add", "cluster", self.name)
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-f", str(self.conf)])
        self._wait("slurmctld", lambda: "UP" in self.client("scontrol", "ping"), 60)
        self._spawn("slurmd", [_which("slurmd"), "-D", "-N", "localhost", "-f", str(self.conf)])
        self._wait("the node to be idle",
                   lambda: self.client("sinfo", "-h", "-o", "%t", "-p", PARTITION).strip() == "idle", 60)
        return self

    def _node_line(self) -> str:
        out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
        line = next(x for x in out.splitlines() if x.startswith("NodeName="))
        keep = {k: v for k, v in re.findall(r"(\w+)=(\S+)", line) if k != "NodeName"}
        return "NodeName=localhost NodeAddr=127.0.0.1 " + " ".join(f"{k}={v}" for k, v in keep.items()) \
            + " State=UNKNOWN"

    def stop(self) -> None:
        """Cancel this cluster's jobs, then stop its daemons (the processes this object started, newest first)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            try:
                self.client("scancel", "--full", "-u", "root", check=False, timeout=20)
                t0 = time.time()
                while time.time() - t0 < 30 and self.client("squeue", "-h", check=False, timeout=20).strip():
                    time.sleep(0.5)
            except (OSError, subprocess.SubprocessError):
                pass
        for name in reversed(list(self.procs)):
            p = self.procs[name]
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
        self.procs.clear()
