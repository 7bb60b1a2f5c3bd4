"""Throwaway PostgreSQL clusters built with the machine's own server binaries (``initdb``,
``pg_ctl``, ``pg_basebackup -R``): a primary that a test may stop and start, and a streaming
hot standby of it. As root they run as the ``postgres`` OS user (initdb refuses root), in a
temporary directory of their own, on free ports. Used by test_serve.py and test_standby.py.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

SERVER_USER = "postgres"


def bin_dir() -> Path | None:
    """The newest server's binaries on this machine (``/usr/lib/postgresql/<n>/bin``)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


def require_binaries() -> Path:
    """Return the binaries' folder, or skip the test where the server is not installed."""
    found = bin_dir()
    if found is None:
        pytest.skip("no PostgreSQL server binaries (initdb) on this machine")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            pytest.skip(f"running as root without a {SERVER_USER!r} OS user for initdb")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *command] if os.geteuid() == 0 else command


class Cluster:
    """One server: its data directory, port and log."""

    def __init__(self, bindir: Path, data: Path, port: int) -> None:
        self.bindir, self.data, self.port = bindir, data, port
        self.log = data.parent / f"{data.name}.log"

    def run(self, *args: str) -> None:
        subprocess.run(
            _as_server_user([str(self.bindir / args[0]), *args[1:]]),
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def configure(self, **settings: str | int) -> None:
        with (self.data / "postgresql.auto.conf").open("a") as conf:
            for name, value in settings.items():
                conf.write(f"{name} = '{value}'\n")

    def start(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def dsn(self, dbname: str = "postgres", user: str = SERVER_USER) -> str:
        return f"host=127.0.0.1 port={self.port} user={user} dbname={dbname}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.dsn(dbname), autocommit=True, connect_timeout=10)


@contextmanager
def workspace() -> Iterator[tuple[Path, Path]]:
    """Yield (binaries, a temporary directory the server user owns); removed afterwards."""
    bindir = require_binaries()
    root = Path(tempfile.mkdtemp(prefix="beaconsql-cluster-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam(SERVER_USER)
        os.chown(root, user.pw_uid, user.pw_gid)
    root.chmod(0o755)
    try:
        yield bindir, root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def init_primary(bindir: Path, root: Path, name: str = "primary") -> Cluster:
    """initdb and start a server that accepts replication connections on 127.0.0.1."""
    cluster = Cluster(bindir, root / name, free_port())
    cluster.run("initdb", "-D", str(cluster.data), "-U", SERVER_USER, "--auth=trust", "-E", "UTF8")
    cluster.configure(
        port=cluster.port,
        listen_addresses="127.0.0.1",
        unix_socket_directories=str(root),
        wal_level="replica",
        max_wal_senders=5,
        fsync="off",
        full_page_writes="off",
        shared_buffers="32MB",
    )
    cluster.start()
    return cluster


def init_standby(primary: Cluster, root: Path, name: str = "standby", **settings: str) -> Cluster:
    """pg_basebackup -R from *primary* and start it as a streaming hot standby."""
    standby = Cluster(primary.bindir, root / name, free_port())
    standby.run(
        "pg_basebackup",
        "-h",
        "127.0.0.1",
        "-p",
        str(primary.port),
        "-U",
        SERVER_USER,
        "-D",
        str(standby.data),
        "-R",
        "-X",
        "stream",
    )
    standby.configure(port=standby.port, hot_standby="on", **settings)
    standby.start()
    return standby


def stop_all(*clusters: Cluster) -> None:
    for cluster in clusters:
        if cluster.running():
            try:
                cluster.stop("immediate")
            except subprocess.SubprocessError:
                pass


def wait_for_replay(primary: Cluster, standby: Cluster, timeout: float = 30) -> None:
    """Wait until *standby* has replayed everything *primary* has written so far."""
    with primary.connect() as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    target = row[0]
    deadline = time.monotonic() + timeout
    with standby.connect() as conn:
        while True:
            done = conn.execute(
                "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)
            ).fetchone()
            if done and done[0]:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the standby did not replay up to {target} in {timeout}s")
            time.sleep(0.05)
