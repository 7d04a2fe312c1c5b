"""A throwaway PostgreSQL server for the tests: one cluster per test session, one database per test.

The cluster lives in a fresh temporary directory, listens on 127.0.0.1 on a free port with password
(scram-sha-256) authentication, and keeps its unix socket inside that directory, so it never meets a
system PostgreSQL. initdb and pg_ctl refuse to run as root; under root they run as the `postgres` user.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

HOST = "127.0.0.1"
SUPERUSER = "postgres"
ROLE = "regtune"
PREFERRED_MAJOR = 15
# Durability buys nothing in a cluster that is deleted at the end of the session.
_SETTINGS = {"listen_addresses": HOST, "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
_PORT_ATTEMPTS = 3


@functools.cache
def find_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl, or None when PostgreSQL is not installed.

    Asks `pg_config --bindir` first; otherwise takes /usr/lib/postgresql/<major>/bin, preferring
    major 15, else the newest.
    """
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=30
            )
            bindir = Path(out.stdout.strip())
            if (bindir / "initdb").is_file():
                return bindir
    found = {
        int(m.group(1)): Path(p).parent
        for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")
        if (m := re.search(r"/postgresql/(\d+)/bin/", p))
    }
    if not found:
        return None
    return found.get(PREFERRED_MAJOR, found[max(found)])


@dataclass(frozen=True)
class PostgresServer:
    """A running cluster: `ROLE` logs in with `password` and owns each database made by `database()`."""

    bindir: Path
    root: Path
    port: int
    password: str
    superuser_password: str

    def url(self, dbname: str) -> str:
        """The SQLAlchemy URL (psycopg 3 driver) for database `dbname` as the test role."""
        return f"postgresql+psycopg://{ROLE}:{self.password}@{HOST}:{self.port}/{dbname}"

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """Create a database with a unique name, yield its URL, then drop it, ending its connections."""
        name = f"test_{uuid.uuid4().hex[:16]}"
        self._admin(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(ROLE)))
        try:
            yield self.url(name)
        finally:
            self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are cut), as a database restart or outage does."""
        _run_as_owner([str(self.bindir / "pg_ctl"), "stop", f"--pgdata={self.root / 'data'}", "--mode=fast",
                       "--wait", "--timeout=60"], self.root)

    def start(self) -> None:
        """Start the stopped server again, on the same port."""
        _run_as_owner([str(self.bindir / "pg_ctl"), "start", f"--pgdata={self.root / 'data'}",
                       f"--log={self.root / 'server.log'}", "--wait", "--timeout=60", f"--options=-p {self.port}"],
                      self.root)

    def _admin(self, statement: sql.Composed) -> None:
        """Run one statement as the superuser, outside a transaction (CREATE/DROP DATABASE need that)."""
        with psycopg.connect(
            host=HOST,
            port=self.port,
            user=SUPERUSER,
            password=self.superuser_password,
            dbname="postgres",
            autocommit=True,
            connect_timeout=30,
        ) as conn:
            conn.execute(statement)


@contextlib.contextmanager
def running_server(bindir: Path) -> Iterator[PostgresServer]:
    """Start a fresh cluster with the binaries in `bindir`, yield it, then stop it and delete its files.

    Raises:
        RuntimeError: initdb or pg_ctl failed; the message carries their output and the server log.
    """
    root = Path(tempfile.mkdtemp(prefix="regtune-pg-"))
    data = root / "data"
    try:
        yield _init_cluster(bindir, root, data)
    finally:
        if data.exists():  # also after a failed start: pg_ctl stop is harmless on a stopped server
            _run_as_owner(
                [str(bindir / "pg_ctl"), "stop", f"--pgdata={data}", "--mode=immediate"], root, check=False
            )
        shutil.rmtree(root, ignore_errors=True)


def _init_cluster(bindir: Path, root: Path, data: Path) -> PostgresServer:
    (root / "run").mkdir()
    superuser_password = secrets.token_hex(16)
    pwfile = root / "pwfile"
    pwfile.write_text(superuser_password + "\n")
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        for path in (root, root / "run", pwfile):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    options = [f"--pgdata={data}", f"--username={SUPERUSER}", "--auth=scram-sha-256", f"--pwfile={pwfile}"]
    _run_as_owner([str(bindir / "initdb"), *options, "--encoding=UTF8", "--no-locale", "--no-sync"], root)
    pwfile.unlink()
    settings = {**_SETTINGS, "unix_socket_directories": str(root / "run")}
    with (data / "postgresql.conf").open("a") as conf:
        conf.writelines(f"{key} = '{value}'\n" for key, value in settings.items())
    server = PostgresServer(
        bindir=bindir,
        root=root,
        port=_start(bindir, root, data),
        password=secrets.token_hex(16),
        superuser_password=superuser_password,
    )
    role, password = sql.Identifier(ROLE), sql.Literal(server.password)
    server._admin(sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(role, password))
    return server


def _start(bindir: Path, root: Path, data: Path) -> int:
    """Start the server on a free port and return the port; another process may take the port first."""
    log = root / "server.log"
    pg_ctl = [str(bindir / "pg_ctl"), "start", f"--pgdata={data}", f"--log={log}", "--wait", "--timeout=60"]
    for _ in range(_PORT_ATTEMPTS):
        port = _free_port()
        started = _run_as_owner([*pg_ctl, f"--options=-p {port}"], root, check=False)
        if started.returncode == 0:
            return port
        if "already in use" not in _read(log):
            break
    raise RuntimeError(f"pg_ctl start failed:\n{started.stdout}\n--- {log} ---\n{_read(log)}")


def _run_as_owner(cmd: Sequence[str], root: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool as the cluster's owner: `postgres` under root, else the current user."""
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    done = subprocess.run(
        cmd,
        cwd=root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=False,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with exit code {done.returncode}:\n{done.stdout}")
    return done


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
