"""Throwaway PostgreSQL clusters for the integration tests.

A Cluster is one data directory plus the server running on it, bound to
127.0.0.1 on a free port and to a Unix socket in its own directory.  It knows
nothing about pytest: conftest.py wraps it in fixtures, and it can be driven
from a Python prompt when a test needs debugging.

Binaries come from Debian (/usr/lib/postgresql/MAJOR/bin) or from the cache
that tests/install-postgres.sh fills.  initdb and postgres refuse to run as
root, and every session and CI run here is root, so the server commands run as
the 'postgres' OS user then; everything else (psql, psycopg) runs as we are.
"""

import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PSQL = "/usr/bin/psql"
SERVER_OS_USER = "postgres"
HBA_METHODS = ("trust", "password", "md5", "scram-sha-256")

# The kernel's limit on a Unix socket path (sun_path is 108 bytes with NUL).
_MAX_SOCKET_PATH = 107
_CONF_MARKER = "# ---- settings written by tests/integration/pgcluster.py ----"


# Clusters initialised and not yet destroyed.  Fixtures destroy theirs at
# teardown; this catches the rest (an interrupted run, a script that forgot)
# so no server outlives the Python process that started it.
_live_clusters = set()


@atexit.register
def _destroy_leftovers():
    for cluster in list(_live_clusters):
        try:
            cluster.destroy()
        except Exception:
            pass


class MissingPrerequisite(Exception):
    """Something the tests need is not installed; the message says how to get it."""


class ClusterError(Exception):
    """A cluster command failed; the message carries its output or the server log."""


# install-postgres.sh's default when, as root, the postgres OS user cannot
# enter the checkout.
ROOT_FALLBACK_CACHE = Path("/var/cache/pghandoff/postgres")


def pg_cache_dirs():
    """Where tests/install-postgres.sh may have put the majors that Debian lacks."""
    if os.environ.get("PGHANDOFF_PG_CACHE"):
        return [Path(os.environ["PGHANDOFF_PG_CACHE"])]
    return [REPO_ROOT / ".cache" / "postgres", ROOT_FALLBACK_CACHE]


def find_bindir(major):
    """Directory holding initdb, pg_ctl and postgres for this major, or raise."""
    candidates = [Path(f"/usr/lib/postgresql/{major}/bin")]
    candidates += [cache / str(major) / "bin" for cache in pg_cache_dirs()]
    for bindir in candidates:
        if (bindir / "postgres").is_file() and (bindir / "initdb").is_file():
            return bindir
    raise MissingPrerequisite(
        f"PostgreSQL {major} not found in {', '.join(map(str, candidates))}; "
        f"run tests/install-postgres.sh {major}"
    )


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now.

    Another process may take it before the server binds it; start() retries
    with a new port when that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def conf_value(value):
    """Render a Python value as a postgresql.conf value."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def conninfo(**params):
    """A libpq key=value conninfo string; values quoted only where needed."""
    parts = []
    for key, value in params.items():
        if value is None:
            continue
        text = str(value)
        if text == "" or re.search(r"[\s'\\]", text):
            text = "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
        parts.append(f"{key}={text}")
    return " ".join(parts)


def _running_as_root():
    return os.geteuid() == 0


def _server_user_ids():
    import pwd

    try:
        entry = pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        raise MissingPrerequisite(
            f"running as root, and there is no '{SERVER_OS_USER}' OS user to run "
            "PostgreSQL as (apt-get install postgresql-common)"
        ) from None
    return entry.pw_uid, entry.pw_gid


class Cluster:
    """One PostgreSQL data directory and its server.

    Typical use:
        c = Cluster(15).init().start()
        c.execute("SELECT 1")
        c.destroy()
    """

    def __init__(self, major, base_dir=None, settings=None, hba="trust",
                 superuser="postgres", password=None):
        if hba not in HBA_METHODS:
            raise ValueError(f"hba must be one of {HBA_METHODS}, not {hba!r}")
        if hba != "trust" and password is None:
            raise ValueError(f"hba={hba!r} needs a superuser password")
        self.major = int(major)
        self.bindir = find_bindir(self.major)
        self.hba = hba
        self.superuser = superuser
        self.password = password
        self.host = "127.0.0.1"
        self._base_dir_wanted = Path(base_dir) if base_dir else None
        self._extra_settings = dict(settings or {})
        # init() picks a free port, so the DSN is known before start(), and
        # start() may pick another if it was taken meanwhile; a port given in
        # settings is the caller's and is never changed.
        self._port_is_ours = "port" not in self._extra_settings
        self.settings = {}
        self.base_dir = None  # set by init()
        self._version_num = None
        if _running_as_root():
            self._server_ids = _server_user_ids()
            if shutil.which("runuser") is None:
                raise MissingPrerequisite("running as root, and runuser is missing (util-linux)")
        else:
            self._server_ids = None

    # ---- paths and facts ---------------------------------------------------

    @property
    def datadir(self):
        return self.base_dir / "data"

    @property
    def socket_dir(self):
        return self.base_dir

    @property
    def logfile(self):
        """The server log: pg_ctl sends the postmaster's stderr here."""
        return self.datadir / "server.log"

    @property
    def port(self):
        return int(self.settings["port"])

    @property
    def version_num(self):
        """Like server_version_num, read from the binary: 130023 for 13.23."""
        if self._version_num is None:
            out = subprocess.run([str(self.bindir / "postgres"), "--version"],
                                 capture_output=True, text=True, check=True).stdout
            m = re.search(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?", out)
            if not m:
                raise ClusterError(f"cannot parse {self.bindir}/postgres --version: {out!r}")
            major, minor = int(m.group(1)), int(m.group(2) or 0)
            if major != self.major:
                raise ClusterError(f"{self.bindir}/postgres is {major}, not {self.major}")
            self._version_num = major * 10000 + minor
        return self._version_num

    def is_running(self):
        return self.base_dir is not None and (self.datadir / "postmaster.pid").exists()

    def __repr__(self):
        where = self.base_dir or "not initialised"
        return f"<Cluster {self.major} {self.host}:{self.settings.get('port', '?')} {where}>"

    # ---- lifecycle ---------------------------------------------------------

    def init(self):
        """Create the data directory and write our postgresql.conf and pg_hba.conf."""
        if self.base_dir is not None:
            raise ClusterError(f"{self!r} is already initialised")
        self.base_dir = self._make_base_dir()
        _live_clusters.add(self)

        cmd = [str(self.bindir / "initdb"), "-D", str(self.datadir),
               "-U", self.superuser, f"--auth={self.hba}", "-E", "UTF8",
               "--locale=C",
               # Throwaway data: skip initdb's fsync of every file it wrote.
               "--no-sync"]
        pwfile = None
        if self.password is not None:
            pwfile = self.base_dir / "pwfile"
            pwfile.write_text(self.password + "\n")
            self._give_to_server_user(pwfile, mode=0o600)
            cmd.append(f"--pwfile={pwfile}")
        try:
            self._run_server_cmd(cmd, what="initdb")
        finally:
            if pwfile is not None:
                pwfile.unlink()

        self.settings = self._default_settings()
        self.settings.update(self._extra_settings)
        self._write_conf()
        self._write_hba()
        if self.hba == "md5" and self.password is not None:
            self._rehash_superuser_password()
        return self

    def start(self, timeout=60):
        """Start the server and wait until it accepts connections."""
        if self.base_dir is None:
            self.init()
        # A free port can be taken between free_port() and the server's bind;
        # then pick another, a couple of times.
        for attempt in range(3):
            result = self._run_server_cmd(
                [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile),
                 "-w", "-t", str(timeout), "start"],
                what="pg_ctl start", check=False)
            if result.returncode == 0:
                return self
            log = self.log_tail()
            if self._port_is_ours and attempt < 2 and "could not bind" in log:
                self.settings["port"] = free_port()
                self._write_conf()
                continue
            raise ClusterError(
                f"PostgreSQL {self.major} in {self.datadir} did not start "
                f"(pg_ctl exit {result.returncode}):\n{result.stdout}{result.stderr}\n"
                f"---- last lines of {self.logfile} ----\n{log}")
        raise AssertionError("unreachable")

    def stop(self, mode="fast"):
        """Stop the server if it runs; mode is pg_ctl's: smart, fast or immediate."""
        if not self.is_running():
            return self
        self._run_server_cmd([str(self.bindir / "pg_ctl"), "-D", str(self.datadir),
                              "-m", mode, "-w", "stop"], what="pg_ctl stop")
        return self

    def restart(self):
        self.stop()
        return self.start()

    def destroy(self):
        """Stop the server whatever state it is in, and remove every file."""
        if self.base_dir is None:
            return
        try:
            # The data goes away, so nothing is worth a clean shutdown.
            self.stop(mode="immediate")
        except Exception:
            self._kill_postmaster()
        shutil.rmtree(self.base_dir, ignore_errors=True)
        self.base_dir = None
        _live_clusters.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.destroy()

    # ---- settings ----------------------------------------------------------

    def set(self, **settings):
        """Change settings; reload, or restart if one of them needs it.

        The values go into our block of postgresql.conf rather than through
        ALTER SYSTEM, so the file shows everything a test changed.
        """
        restart_needed = False
        if self.is_running():
            rows = self.execute("SELECT name FROM pg_settings "
                                "WHERE name = ANY(%s) AND context = 'postmaster'",
                                params=(list(settings),))
            restart_needed = bool(rows)
        if "port" in settings:
            self._port_is_ours = False
        self.settings.update(settings)
        self._write_conf()
        if not self.is_running():
            return self
        if restart_needed:
            return self.restart()
        self._reload()
        return self

    def _reload(self):
        # pg_reload_conf() only signals the postmaster; wait until a new
        # backend sees the new load time, so the next connection gets the
        # new values.
        before = self.execute("SELECT pg_conf_load_time()")[0][0]
        self.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 10
        while self.execute("SELECT pg_conf_load_time()")[0][0] <= before:
            if time.monotonic() > deadline:
                raise ClusterError(f"{self!r}: configuration reload not seen after 10 s")
            time.sleep(0.02)

    # ---- clients -----------------------------------------------------------

    def dsn(self, dbname="postgres", user=None, password=None):
        """libpq conninfo for a TCP connection; the superuser's password by default."""
        if user is None:
            user = self.superuser
        if password is None and user == self.superuser:
            password = self.password
        return conninfo(host=self.host, port=self.port, dbname=dbname,
                        user=user, password=password)

    def connect(self, dbname="postgres", **kw):
        """A psycopg connection, autocommit unless told otherwise.

        user= and password= go into the DSN; other keywords go to psycopg.connect.
        """
        try:
            import psycopg
        except ImportError:
            raise MissingPrerequisite(
                "psycopg is not importable: run the tests with /usr/bin/python3 "
                "(apt-get install python3-psycopg)") from None
        dsn = self.dsn(dbname, user=kw.pop("user", None), password=kw.pop("password", None))
        kw.setdefault("autocommit", True)
        kw.setdefault("connect_timeout", 10)
        return psycopg.connect(dsn, **kw)

    def execute(self, sql, dbname="postgres", params=None):
        """Run one statement; its rows as a list of tuples, or None if it returns none."""
        with self.connect(dbname) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description is not None else None

    def psql(self, args, dbname="postgres", check=True, input=None, timeout=60):
        """Run the system psql against this cluster; args is a list of psql arguments."""
        if not os.access(SYSTEM_PSQL, os.X_OK):
            raise MissingPrerequisite(f"{SYSTEM_PSQL} not found (apt-get install postgresql-client)")
        # -X: ignore ~/.psqlrc, which could change the output tests compare.
        cmd = [SYSTEM_PSQL, "-X", "-v", "ON_ERROR_STOP=1", "-d", self.dsn(dbname), *args]
        return subprocess.run(cmd, check=check, input=input, capture_output=True,
                              text=True, timeout=timeout)

    def log_tail(self, lines=30):
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError as e:
            return f"(no server log: {e})"
        return "\n".join(text.splitlines()[-lines:])

    # ---- internals ---------------------------------------------------------

    def _default_settings(self):
        return {
            "listen_addresses": self.host,
            "port": free_port(),
            "unix_socket_directories": str(self.socket_dir),
            "wal_level": "logical",
            "max_wal_senders": 10,
            "max_replication_slots": 10,
            # Throwaway clusters: durability costs time and buys nothing.
            "fsync": False,
            "shared_buffers": "32MB",
            # Everything goes to pg_ctl's -l file, data/server.log, so that
            # start() can show why a server did not come up.
            "logging_collector": False,
            "log_line_prefix": "%m [%p] %q%u@%d ",
            "lc_messages": "C",
            **({"password_encryption": self.hba}
               if self.hba in ("md5", "scram-sha-256") else {}),
        }

    def _make_base_dir(self):
        """A fresh directory that the server's OS user can reach and write.

        pytest's tmp_path lives under /tmp/pytest-of-root, mode 700, which the
        postgres user cannot enter; a base_dir like that, or one too deep for
        a Unix socket path, is passed over for /tmp.
        """
        candidates = [Path(tempfile.gettempdir())]
        if self._base_dir_wanted is not None:
            candidates.insert(0, self._base_dir_wanted)
        for parent in candidates:
            if len(str(parent)) + len("/pghandoff-pg-XXXXXXXX/.s.PGSQL.65535") > _MAX_SOCKET_PATH:
                continue
            try:
                parent.mkdir(parents=True, exist_ok=True)
                path = Path(tempfile.mkdtemp(prefix="pghandoff-pg-", dir=parent))
            except OSError:
                continue
            self._give_to_server_user(path, mode=0o755)
            if self._server_can_write(path):
                return path
            shutil.rmtree(path, ignore_errors=True)
        raise ClusterError(f"no directory usable by the {SERVER_OS_USER} user among {candidates}")

    def _give_to_server_user(self, path, mode):
        os.chmod(path, mode)
        if self._server_ids is not None:
            os.chown(path, *self._server_ids)

    def _server_can_write(self, path):
        if self._server_ids is None:
            return os.access(path, os.W_OK | os.X_OK)
        return subprocess.run(["runuser", "-u", SERVER_OS_USER, "--", "test", "-w", str(path)],
                              capture_output=True).returncode == 0

    def _run_server_cmd(self, cmd, what, check=True, input=None):
        """Run initdb, pg_ctl or postgres, as the postgres OS user when we are root."""
        if self._server_ids is not None:
            cmd = ["runuser", "-u", SERVER_OS_USER, "--", *cmd]
        # The embedded binaries find their libraries through RUNPATH
        # $ORIGIN/../lib, so no LD_LIBRARY_PATH is needed.  LC_ALL=C keeps
        # messages in English whatever the caller's locale is.
        env = dict(os.environ, LC_ALL="C")
        env.pop("PGDATA", None)
        # cwd: the caller's may be a mode-700 directory the postgres user
        # cannot enter, which initdb complains about.
        result = subprocess.run(cmd, cwd=self.base_dir, env=env, input=input,
                                capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise ClusterError(f"{what} failed (exit {result.returncode}): {' '.join(cmd)}\n"
                               f"{result.stdout}{result.stderr}")
        return result

    def _write_conf(self):
        """Rewrite our block at the end of postgresql.conf from self.settings."""
        path = self.datadir / "postgresql.conf"
        text = path.read_text()
        text = text.split("\n" + _CONF_MARKER + "\n")[0]
        block = "".join(f"{k} = {conf_value(v)}\n" for k, v in self.settings.items())
        # Writing the existing file keeps its owner, the postgres user.
        path.write_text(f"{text}\n{_CONF_MARKER}\n{block}")

    def _write_hba(self):
        method = self.hba
        lines = [
            "# Written by tests/integration/pgcluster.py",
            "# TYPE  DATABASE     USER  ADDRESS       METHOD",
            f"local   all          all                 {method}",
            f"host    all          all   127.0.0.1/32  {method}",
            f"local   replication  all                 {method}",
            f"host    replication  all   127.0.0.1/32  {method}",
        ]
        (self.datadir / "pg_hba.conf").write_text("\n".join(lines) + "\n")

    def _rehash_superuser_password(self):
        # initdb stores the --pwfile password with its own default hashing,
        # SCRAM from 14 on, and md5 in pg_hba.conf then quietly runs SCRAM.
        # Set it again under our password_encryption = md5 so md5 tests test
        # md5; single-user mode needs no connection and no authentication.
        if "\n" in self.password:
            # Single-user mode ends a statement at a newline.
            raise ValueError("an md5 superuser password cannot contain a newline")
        sql = (f"ALTER ROLE {_quote_ident(self.superuser)} "
               f"PASSWORD {_quote_literal(self.password)};\n")
        result = self._run_server_cmd(
            [str(self.bindir / "postgres"), "--single", "-D", str(self.datadir),
             "-c", "exit_on_error=true", "postgres"],
            what="setting the superuser password", input=sql)
        if "ERROR" in result.stdout + result.stderr:
            raise ClusterError(f"setting the superuser password failed:\n{result.stdout}{result.stderr}")

    def _kill_postmaster(self):
        """Last resort at teardown when pg_ctl stop failed."""
        try:
            pid = int((self.datadir / "postmaster.pid").read_text().split("\n")[0])
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass


def _quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(text):
    # standard_conforming_strings is on in every supported major, so a
    # backslash is an ordinary character.
    return "'" + text.replace("'", "''") + "'"
