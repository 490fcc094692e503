"""What a batch job checks on its first node before it starts Ray (`robustbench-opt check-job`).

A cluster job runs the driver on a node Slurm picks, reading files and reaching the database
from there. Two mistakes then cost a whole allocation and are silent on a login node: a study
file that exists only where the job was submitted, and a storage URL that names no database the
compute nodes can use (the loopback address, or a SQLite file on one node's local disk or on a
network filesystem). Each is one UserError here, before Ray starts or a cell is claimed. The
checks read only: nothing is created, nothing is written. No torch, no Ray.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from robustbench_opt.errors import UserError
from robustbench_opt.storage import ENV_VAR

# Filesystem types (as /proc/mounts names them) that several hosts share over the network.
NETWORK_FILESYSTEMS = frozenset(
    {
        "9p",
        "afs",
        "beegfs",
        "ceph",
        "cifs",
        "fuse.ceph",
        "fuse.glusterfs",
        "fuse.juicefs",
        "fuse.sshfs",
        "glusterfs",
        "gpfs",
        "lustre",
        "nfs",
        "nfs4",
        "orangefs",
        "panfs",
        "pvfs2",
        "smb3",
        "smbfs",
        "wekafs",
    }
)
CONNECT_TIMEOUT_S = 10  # a firewalled database host drops packets: fail in seconds, not minutes
POSTGRES_FIX = (
    "use PostgreSQL on a host every compute node reaches (postgresql+psycopg://USER:PW@HOST/DB)"
)


@dataclass(frozen=True)
class Mount:
    """The filesystem that holds a path: where it is mounted and its type."""

    point: str
    fstype: str

    @property
    def shared(self) -> bool:
        """Whether other hosts see the same files (a network filesystem)."""
        return self.fstype in NETWORK_FILESYSTEMS


@dataclass(frozen=True)
class Job:
    """Where the check runs: this node, the job's node count, whether it is an array's task."""

    host: str
    nodes: int = 1
    array: bool = False

    @property
    def spread(self) -> str | None:
        """Why this study's next driver may run on another node, in words; None if it cannot."""
        if self.nodes > 1:
            return f"in a {self.nodes}-node job"
        if self.array:
            return "in a job array (its tasks run on any nodes)"
        return None


def check_job(study_file: str, url: str, job: Job) -> str:
    """Checks a job's study file and storage from this node; returns one line saying so.

    Raises UserError naming the file or the storage (password hidden), this node and the fix.
    """
    check_study_file(study_file, job.host)
    shown = check_storage(url, job)
    plural = "s" * (job.nodes != 1)
    array = ", a job array's task" if job.array else ""
    return (
        f"job check on {job.host} ({job.nodes} node{plural}{array}): study file {study_file}; "
        f"storage {shown}"
    )


def check_study_file(study_file: str, host: str) -> None:
    """The study file is readable here, as the driver will read it (`run` validates it)."""
    path = Path(study_file)
    try:
        with path.open("rb"):
            pass
    except OSError as err:
        raise UserError(
            f"study file {study_file!r} cannot be read on {host}, the job's first node, where "
            f"the driver runs ({err.strerror}: {os.path.abspath(path)}); put the study where the "
            "compute nodes see it (a shared filesystem) and submit from there, or pass an "
            "absolute path"
        ) from None


def check_storage(url: str, job: Job, mounts: str | None = None) -> str:
    """The storage URL (password hidden) once this job can use it from this node.

    SQLite: a file on a network filesystem is refused (its locks are unsafe across hosts), and
    so is a file on this node's local disk when the study's next driver may run elsewhere (a
    multi-node job, a job array). A database server: the loopback address is refused there too,
    then a connection is opened and closed. `mounts` is /proc/mounts' text (for tests).
    """
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise UserError(
            f"invalid storage URL in --storage or ${ENV_VAR}; valid forms: sqlite:///PATH, "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        _check_sqlite(parsed, shown, job, mounts)
        return f"{shown} (SQLite on {job.host})"
    if backend != "postgresql":
        raise UserError(
            f"unsupported storage {shown}; valid: sqlite, postgresql; fix --storage or ${ENV_VAR}"
        )
    server = parsed.host or "localhost"  # no host: the local Unix socket
    if job.spread and is_loopback(server):
        raise UserError(
            f"storage {shown} names the loopback host {server!r}: {job.spread} that is "
            f"whichever node runs the driver ({job.host} now), not the database server; use the "
            f"server's host name or address in ${ENV_VAR}"
        )
    _check_connect(parsed, shown, job.host)
    return f"{shown} (reachable from {job.host})"


def is_loopback(server: str) -> bool:
    """Whether a host name or address means this machine itself."""
    if server.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        address = ipaddress.ip_address(server.strip("[]"))
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def mount_of(path: Path, mounts: str | None = None) -> Mount:
    """The mount holding `path` (its nearest existing ancestor), from /proc/mounts' text."""
    if mounts is None:
        mounts = Path("/proc/mounts").read_text()
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    resolved = os.path.realpath(path)
    best = Mount("/", "unknown")
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = _unescape(fields[1])
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best.point):
            best = Mount(point, fields[2])  # the last of equal mount points is the visible one
    return best


def _check_sqlite(parsed: sa.URL, shown: str, job: Job, mounts: str | None) -> None:
    if parsed.database in (None, "", ":memory:"):
        raise UserError(
            f"storage {shown} is an in-memory SQLite database: the job's results would vanish "
            f"with it; set ${ENV_VAR} to a database file or server"
        )
    path = Path(os.path.abspath(parsed.database))
    mount = mount_of(path, mounts)
    if mount.shared:
        raise UserError(
            f"SQLite file {path} is on a network filesystem ({mount.fstype} at {mount.point}), "
            "where SQLite's file locks are not safe across hosts (a second job or `status` on "
            f"another host can corrupt it); {POSTGRES_FIX}, or a SQLite file on a node's local "
            "disk in a one-node job"
        )
    if job.spread:
        raise UserError(
            f"SQLite file {path} is on the local disk of {job.host} ({mount.fstype} at "
            f"{mount.point}), but {job.spread} the next driver of this study (a resubmission, "
            f"another task) may run on another node, where this file is not; {POSTGRES_FIX}, "
            "or run the study in one-node jobs (not an array)"
        )


def _check_connect(parsed: sa.URL, shown: str, host: str) -> None:
    engine = sa.create_engine(
        parsed,
        poolclass=sa.pool.NullPool,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
    )
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except (sa.exc.SQLAlchemyError, ImportError) as err:
        first = (str(getattr(err, "orig", None) or err).strip().splitlines() or [""])[0]
        raise UserError(
            f"cannot reach storage {shown} from {host}: {first}; the database must accept "
            "connections from the compute nodes (host name, port, firewall, pg_hba.conf): fix "
            f"${ENV_VAR}"
        ) from None
    finally:
        engine.dispose()


def _unescape(field: str) -> str:
    """A /proc/mounts field: spaces, tabs, newlines and backslashes come as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field
