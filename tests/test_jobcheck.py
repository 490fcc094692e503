"""`robustbench-opt check-job`: a batch job's study file and storage, checked before Ray starts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import sqlalchemy as sa

from robustbench_opt.cli import main
from robustbench_opt.errors import UserError
from robustbench_opt.jobcheck import Job, check_job, check_storage, is_loopback, mount_of

STUDY = str(Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def shared(tmp_path: Path) -> tuple[Path, str]:
    """A directory and a /proc/mounts text in which it is an NFS mount over a local root."""
    mounted = tmp_path / "home dir"
    mounted.mkdir()
    escaped = str(mounted).replace(" ", "\\040")
    mounts = f"/dev/vda1 / ext4 rw 0 0\nserver:/export {escaped} nfs4 rw,relatime 0 0\n"
    return mounted, mounts


def test_mount_of_finds_the_deepest_mount_of_the_nearest_existing_directory(shared) -> None:
    mounted, mounts = shared
    inside = mount_of(mounted / "not" / "yet" / "results.db", mounts)
    assert (inside.point, inside.fstype, inside.shared) == (str(mounted), "nfs4", True)
    beside = mount_of(mounted.parent / "results.db", mounts)
    assert (beside.point, beside.fstype, beside.shared) == ("/", "ext4", False)


def test_sqlite_on_a_network_filesystem_is_refused_even_on_one_node(shared) -> None:
    mounted, mounts = shared
    with pytest.raises(UserError, match="network filesystem \\(nfs4 at .*home dir\\)"):
        check_storage(f"sqlite:///{mounted}/results.db", Job("node7"), mounts)


def test_sqlite_on_local_disk_passes_on_one_node_only(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/results.db"
    mounts = "/dev/vda1 / ext4 rw 0 0\n"
    assert check_storage(url, Job("node7"), mounts) == f"{url} (SQLite on node7)"
    for job, spread in [
        (Job("node7", nodes=2), "in a 2-node job"),
        (Job("node7", nodes=1, array=True), "in a job array"),
    ]:
        with pytest.raises(UserError) as err:
            check_storage(url, job, mounts)
        message = str(err.value)
        assert "on the local disk of node7 (ext4 at /)" in message and spread in message
        assert "postgresql+psycopg://" in message  # the fix
    assert not (tmp_path / "results.db").exists()  # reads only


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(UserError, match="in-memory SQLite"):
        check_storage("sqlite://", Job("node7"))


@pytest.mark.parametrize(
    "host", ["localhost", "127.0.0.1", "127.0.1.1", "[::1]", "0.0.0.0", "LOCALHOST"]
)
def test_the_loopback_host_is_refused_on_two_nodes_before_any_connection(host: str) -> None:
    url = f"postgresql+psycopg://user:s3cret-pw@{host}:{closed_port()}/db"
    with pytest.raises(UserError) as err:
        check_storage(url, Job("node7", nodes=2), None)
    message = str(err.value)
    assert "loopback host" in message and "2-node job" in message and "node7" in message
    assert "cannot reach" not in message  # refused as written, not by a failed connection
    assert "s3cret-pw" not in message and "***" in message


def test_is_loopback_is_false_for_other_hosts() -> None:
    assert not any(is_loopback(h) for h in ("db.cluster.example", "10.1.2.3", "::2", "pg"))


def test_an_unreachable_server_is_one_line_naming_this_node_without_the_password() -> None:
    url = f"postgresql+psycopg://user:s3cret-pw@127.0.0.1:{closed_port()}/db"
    with pytest.raises(UserError) as err:
        check_storage(url, Job("node7"))
    message = str(err.value)
    assert message.startswith("cannot reach storage postgresql+psycopg://user:***@127.0.0.1:")
    assert "from node7" in message and "\n" not in message and "s3cret-pw" not in message


def test_a_reachable_database_passes_and_is_left_as_it_was(storage_url: str) -> None:
    engine = sa.create_engine(storage_url, poolclass=sa.pool.NullPool)
    before = sa.inspect(engine).get_table_names() if storage_url.startswith("postgresql") else []
    line = check_job(STUDY, storage_url, Job("node7"))
    assert line.startswith(f"job check on node7 (1 node): study file {STUDY}; storage ")
    if storage_url.startswith("sqlite"):
        assert not Path(sa.make_url(storage_url).database).exists()
    else:
        assert "(reachable from node7)" in line
        assert sa.inspect(engine).get_table_names() == before  # nothing created


def test_invalid_and_unsupported_urls_never_echo_the_password() -> None:
    for url, expected in [
        ("postgresql+psycopg://user:s3cret-pw@db:notaport/x", "invalid storage URL"),
        ("mysql://user:s3cret-pw@db/x", "unsupported storage mysql://user:***@db/x"),
    ]:
        with pytest.raises(UserError) as err:
            check_storage(url, Job("node7"))
        assert expected in str(err.value) and "s3cret-pw" not in str(err.value)


def test_check_job_refuses_a_study_file_missing_on_this_node(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        check_job("studies/not-here.yaml", f"sqlite:///{tmp_path}/r.db", Job("node7"))
    message = str(err.value)
    assert "'studies/not-here.yaml' cannot be read on node7" in message
    assert "No such file or directory" in message


def test_cli_exits_2_with_one_line_and_reads_the_node_count_from_slurm(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/results.db"
    assert main(["check-job", STUDY, "--storage", url]) == 0
    assert capsys.readouterr().out.startswith("job check on ")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "3")
    assert main(["check-job", STUDY, "--storage", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: SQLite file ")
    assert "in a 3-node job" in err
    assert main(["check-job", STUDY, "--storage", url, "--nodes", "1"]) == 0  # the flag wins
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "41")
    assert main(["check-job", STUDY, "--storage", url, "--nodes", "1"]) == 2
    assert "in a job array" in capsys.readouterr().err
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "two")
    assert main(["check-job", STUDY, "--storage", url]) == 2
    assert "$SLURM_JOB_NUM_NODES='two' is not a node count" in capsys.readouterr().err
    assert not (tmp_path / "results.db").exists()
