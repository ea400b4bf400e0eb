"""Obtain and run a local Apache Kafka 4.x broker: KRaft, one combined broker + controller.

The jars are resolved once from Maven Central with ``mvn`` (``config/kafka/pom.xml``) into
``cache_dir/<version>/libs`` and shared by every run and every clone. Each broker lives in
its own ``state_dir``::

    state_dir/
        data/               KRaft metadata log and topic partitions (log.dirs)
        logs/server.log     the broker's log (config/kafka/log4j2.yaml)
        server.properties   rendered from config/kafka/server.properties.template
        broker.out          the JVM's stdout/stderr (crashes before logging starts)
        broker.pid          pid of the running JVM
        broker.json         what the running broker was started with (bootstrap, version)

The broker runs in its own session and outlives the Python process that started it; it is
stopped with :func:`stop` (``stream-ae kafka down``).

Clients connect over PLAINTEXT on ``port``. With ``sasl_port`` set (and at least one user in
``sasl_users``, name -> password) the broker also opens a SASL_PLAINTEXT listener there with
the PLAIN mechanism, for trying (and testing) clients configured with
``kafka.security_protocol = "SASL_PLAINTEXT"``, ``kafka.sasl_mechanism = "PLAIN"`` and
``kafka.sasl_username`` / ``kafka.sasl_password``. It is an extra client listener only: the
broker and its controller still talk to each other over PLAINTEXT, and the PLAINTEXT
listener stays open. The users live in ``server.properties`` (written readable by its owner
only); the broker logs that property as ``[hidden]``. Without ``sasl_port`` the rendered
properties are the template's, byte for byte.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from stream_ae.errors import BrokerError

__all__ = [
    "BrokerConfig",
    "BrokerInfo",
    "ensure_jars",
    "free_port",
    "ping",
    "start",
    "status",
    "stop",
]

log = logging.getLogger(__name__)
_rdkafka_log = logging.getLogger(f"{__name__}.librdkafka")

Progress = Callable[[str], None]

#: The KRaft node id of the single combined broker + controller.
NODE_ID = 1
#: Where pom.xml, server.properties.template and log4j2.yaml live (a project checkout).
CONFIG_DIR = Path(__file__).resolve().parents[2] / "config" / "kafka"

WIPE_HINT = "run `stream-ae kafka down --wipe` to delete the local broker's data and start afresh"
_TAIL_LINES = 20
_MVN_TIMEOUT_S = 900.0
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_HEAP = re.compile(r"^\d+[kKmMgG]?$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+([.-][0-9A-Za-z.-]+)?$")
#: a SASL/PLAIN user name: it becomes the JAAS option ``user_<name>``, a bare word there
_SASL_USER = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class BrokerConfig:
    """Where the broker's jars and state live and what it listens on."""

    kafka_version: str = "4.1.1"
    cache_dir: Path = Path.home() / ".cache" / "stream_ae" / "kafka"
    state_dir: Path = Path.home() / ".local" / "state" / "stream_ae" / "broker"
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    #: an extra SASL_PLAINTEXT (mechanism PLAIN) client listener on this port; None: none
    sasl_port: int | None = None
    #: the users that listener accepts: name -> password (not shown by ``repr``)
    sasl_users: dict[str, str] = field(default_factory=dict, repr=False, hash=False)

    @property
    def bootstrap(self) -> str:
        """The ``bootstrap.servers`` value clients use: ``host:port``."""
        return f"{self.host}:{self.port}"

    @property
    def sasl_bootstrap(self) -> str | None:
        """``host:sasl_port`` for SASL_PLAINTEXT clients, or None without that listener."""
        return None if self.sasl_port is None else f"{self.host}:{self.sasl_port}"

    @property
    def libs_dir(self) -> Path:
        return self.cache_dir / self.kafka_version / "libs"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def log_path(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "broker.pid"

    @property
    def properties_file(self) -> Path:
        return self.state_dir / "server.properties"

    @property
    def out_file(self) -> Path:
        return self.state_dir / "broker.out"

    @property
    def info_file(self) -> Path:
        return self.state_dir / "broker.json"


@dataclass(frozen=True)
class BrokerInfo:
    """A running local broker."""

    bootstrap: str
    pid: int
    log_path: Path
    state_dir: Path
    kafka_version: str
    #: the SASL_PLAINTEXT (PLAIN) listener's ``host:port``, when it has one
    sasl_bootstrap: str | None = None


# --------------------------------------------------------------------------- helpers


def _reporter(progress: Progress | None) -> Progress:
    def say(message: str) -> None:
        log.info("%s", message)
        if progress is not None:
            progress(message)

    return say


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, start: int = 0, lines: int = _TAIL_LINES) -> list[str]:
    """The last non-blank ``lines`` of ``path``, reading only what follows byte ``start``."""
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size < start:  # rolled over since: read it all
                start = 0
            fh.seek(max(start, size - 64 * 1024))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _tails(cfg: BrokerConfig, log_start: int = 0) -> str:
    """What the JVM printed and the end of what it logged since byte ``log_start``."""
    parts = []
    for path, start in ((cfg.out_file, 0), (cfg.log_path, log_start)):
        lines = _tail(path, start)
        if lines:
            body = "\n".join(f"    {line}" for line in lines)
            parts.append(f"--- last lines of {path}:\n{body}")
    return "\n".join(parts) if parts else f"(nothing in {cfg.out_file} or {cfg.log_path})"


def _parse_properties(text: str) -> dict[str, str]:
    props: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        if sep:
            props[key.strip()] = value.strip()
    return props


def _atomic_write(path: Path, text: str, mode: int | None = None) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    if mode is not None:
        tmp.chmod(mode)
    tmp.replace(path)


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """Serialize concurrent ``up``/``down``/downloads across processes."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _config_file(name: str) -> Path:
    path = CONFIG_DIR / name
    if not path.is_file():
        raise BrokerError(
            f"cannot find {name} of the local Kafka broker (looked in {CONFIG_DIR})",
            hint="run stream-ae from a checkout of the project (`uv sync` installs it editable)",
        )
    return path


# --------------------------------------------------------------------------- processes


def _has_proc() -> bool:
    return Path("/proc/self/stat").exists()


_EXEC_WAIT_S = 0.5


def _proc_cmdline(pid: int) -> bytes | None:
    """``/proc/<pid>/cmdline``, waiting out an ``exec`` in progress; None when unreadable.

    While a process execs, the kernel shows an empty command line (the new image has not
    set up its arguments yet): a pid read just after its start would otherwise look like
    "unknown" and be trusted. A command line still empty after ``_EXEC_WAIT_S`` belongs to
    a kernel thread or an exiting process, never to a JVM: ``b""`` is returned.
    """
    path = Path("/proc") / str(pid) / "cmdline"
    deadline = time.monotonic() + _EXEC_WAIT_S
    while True:
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        if raw or time.monotonic() >= deadline:
            return raw
        time.sleep(0.005)


def _cmdline(pid: int) -> str | None:
    """The command line of ``pid`` (``""`` when it has none), or None when it cannot be read."""
    if _has_proc():
        raw = _proc_cmdline(pid)
        if raw is None:
            return None
        return raw.replace(b"\0", b" ").decode("utf-8", errors="replace").strip()
    try:
        out = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _is_zombie(pid: int) -> bool:
    if _has_proc():
        try:
            stat = (Path("/proc") / str(pid) / "stat").read_text()
        except OSError:
            return False
        fields = stat.rsplit(")", 1)[-1].split()
        return bool(fields) and fields[0] in ("Z", "X")
    try:
        out = subprocess.run(
            ["ps", "-o", "stat=", "-p", str(pid)],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return out.stdout.strip().startswith("Z")


def _pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie (an exited, unreaped process)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError, OSError):
        # Our own child (not the usual case: the JVM is started through sh): reap it.
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    return not _is_zombie(pid)


def _is_our_broker(cfg: BrokerConfig, pid: int) -> bool:
    """``pid`` is alive and is the JVM started for this state dir (not a reused pid)."""
    if not _pid_alive(pid):
        return False
    cmd = _cmdline(pid)
    if cmd is None:  # cannot tell (another user's process or no ps): trust the pid file
        return True
    return "kafka.Kafka" in cmd and str(cfg.properties_file) in cmd


def _read_pid(cfg: BrokerConfig) -> int | None:
    try:
        text = cfg.pid_file.read_text().strip()
    except OSError:
        return None
    try:
        return int(text)
    except ValueError:
        return -1  # garbage: treated as stale


def _remove_run_files(cfg: BrokerConfig) -> None:
    for path in (cfg.pid_file, cfg.info_file):
        path.unlink(missing_ok=True)


def _info(cfg: BrokerConfig, pid: int) -> BrokerInfo:
    bootstrap, version, sasl = cfg.bootstrap, cfg.kafka_version, cfg.sasl_bootstrap
    try:
        recorded = json.loads(cfg.info_file.read_text())
        bootstrap = str(recorded.get("bootstrap", bootstrap))
        version = str(recorded.get("kafka_version", version))
        sasl = recorded.get("sasl_bootstrap")  # absent: started without SASL (or before it)
    except (OSError, ValueError):
        pass
    return BrokerInfo(
        bootstrap=bootstrap,
        pid=pid,
        log_path=cfg.log_path,
        state_dir=cfg.state_dir,
        kafka_version=version,
        sasl_bootstrap=None if sasl is None else str(sasl),
    )


# --------------------------------------------------------------------------- ports


def _port_busy(host: str, port: int) -> bool:
    """Whether binding ``host:port`` for listening would fail (as it would for the JVM)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like Java's ServerSocket: connections of a broker stopped moments ago (TIME_WAIT)
        # must not count as "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _listener_of(port: int) -> str | None:
    """Best effort (Linux): ``pid N (command)`` of the process listening on ``port``."""
    if not _has_proc():
        return None
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target in inodes:
                cmd = _cmdline(int(proc.name)) or "?"
                if "kafka.Kafka" in cmd:
                    return f"another Kafka broker, pid {proc.name} (config {cmd.split()[-1]})"
                return f"pid {proc.name} ({cmd[:120]})"
    return None


class _Listener(NamedTuple):
    setting: str  # the local_broker setting of its port
    port: int
    role: str
    also: str  # what else changes with the port (for the hint)


def _listeners(cfg: BrokerConfig) -> list[_Listener]:
    """The listeners the broker opens, each with the setting of its port."""
    out = [
        _Listener(
            "port", cfg.port, "client (PLAINTEXT)", "; clients then need kafka.bootstrap_servers"
        ),
        _Listener("controller_port", cfg.controller_port, "KRaft controller", ""),
    ]
    if cfg.sasl_port is not None:
        out.append(
            _Listener(
                "sasl_port",
                cfg.sasl_port,
                "client (SASL_PLAINTEXT)",
                "; SASL clients then need kafka.bootstrap_servers",
            )
        )
    return out


def _check_ports(cfg: BrokerConfig) -> None:
    for setting, port, role, also in _listeners(cfg):
        if _port_busy(cfg.host, port):
            who = _listener_of(port) or "another process"
            stop_it = (
                "stop it (`stream-ae kafka down` with its state dir)"
                if who.startswith("another Kafka broker")
                else "stop that process"
            )
            raise BrokerError(
                f"port {port} on {cfg.host} is already in use by {who}; the local Kafka "
                f"broker needs it for its {role} listener",
                hint=f"{stop_it}, or choose another port with the `local_broker.{setting}` "
                f"setting (STREAM_AE_LOCAL_BROKER__{setting.upper()}){also}",
            )


def _heap_bytes(heap: str) -> int:
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    suffix = heap[-1].lower()
    return int(heap[:-1]) * units[suffix] if suffix in units else int(heap)


def _validate(cfg: BrokerConfig) -> None:
    def bad(what: str, hint: str) -> BrokerError:
        return BrokerError(f"invalid local broker setting: {what}", hint=hint)

    ports = {listener.setting: listener.port for listener in _listeners(cfg)}
    for name, value in ports.items():
        if not 0 < value < 65536:
            raise bad(f"{name}={value}", "use a TCP port between 1 and 65535")
    names = list(ports)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if ports[a] == ports[b]:
                raise bad(
                    f"{a} and {b} are both {ports[a]}",
                    "each listener (client, controller, SASL) needs a port of its own",
                )
    if cfg.sasl_port is not None and not cfg.sasl_users:
        raise bad(
            "sasl_port is set but sasl_users is empty",
            "give the SASL listener at least one user: local_broker.sasl_users = "
            '{ name = "password" }',
        )
    if cfg.sasl_users and cfg.sasl_port is None:
        raise bad(
            "sasl_users is set but sasl_port is not",
            "set local_broker.sasl_port to open the SASL listener, or drop sasl_users",
        )
    for user, password in cfg.sasl_users.items():
        if not _SASL_USER.match(user):
            raise bad(
                f"sasl_users has a user named {user!r}",
                "use letters, digits, '_' and '-' in SASL user names",
            )
        # the password is never quoted back: only what is wrong with it
        if not password or any(not (" " <= c <= "~") or c in '"\\' for c in password):
            raise bad(
                f"the password of SASL user {user!r} is empty or has a character other "
                "than printable ASCII, or a '\"' or '\\'",
                "the broker's JAAS configuration quotes it: use printable ASCII without "
                "quotes or backslashes",
            )
    if not _HEAP.match(cfg.heap) or _heap_bytes(cfg.heap) < 128 * 2**20:
        raise bad(f"heap={cfg.heap!r}", "use a JVM heap size of at least 128m, e.g. 512m or 1g")
    if not _VERSION.match(cfg.kafka_version):
        raise bad(f"kafka_version={cfg.kafka_version!r}", "use a release such as 4.1.1")
    if not cfg.host or any(c in cfg.host for c in " :,/"):
        raise bad(f"host={cfg.host!r}", "use an IPv4 address or host name such as 127.0.0.1")


# --------------------------------------------------------------------------- jars


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise BrokerError(
            "java not found (neither $JAVA_HOME/bin/java nor java on PATH); the local "
            "Kafka broker runs on the JVM",
            hint="install a Java 17+ runtime, e.g. `apt-get install openjdk-17-jre-headless` "
            "or `brew install openjdk@17`, or set JAVA_HOME",
        )
    return found


def _jars_complete(libs: Path, marker: Path) -> bool:
    try:
        names = json.loads(marker.read_text())["jars"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return bool(names) and all((libs / str(name)).is_file() for name in names)


def ensure_jars(cfg: BrokerConfig, progress: Progress | None = None) -> Path:
    """Return ``cache_dir/<version>/libs``, downloading the jars with ``mvn`` if needed.

    A marker written after a successful download lists the jars; without it (a download
    that was interrupted) or with a jar missing, the directory is downloaded again.
    """
    say = _reporter(progress)
    cfg = _absolute(cfg)
    version_dir = cfg.cache_dir / cfg.kafka_version
    libs = version_dir / "libs"
    marker = version_dir / "complete.json"
    if _jars_complete(libs, marker):
        return libs
    with _locked(version_dir / ".lock"):
        if _jars_complete(libs, marker):  # another process just finished it
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError(
                f"Maven (mvn) not found on PATH; it is needed once to download the "
                f"Kafka {cfg.kafka_version} jars into {libs}",
                hint="install Maven, e.g. `apt-get install maven` or `brew install maven`",
            )
        pom = _config_file("pom.xml")
        partial = version_dir / f"libs.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        marker.unlink(missing_ok=True)
        say(f"downloading Kafka {cfg.kafka_version} jars with Maven into {libs} (one time)")
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}",
            "-DincludeScope=runtime",
            f"-Dkafka.version={cfg.kafka_version}",
        ]
        started = time.monotonic()
        try:
            done = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=_MVN_TIMEOUT_S,
                check=False,
                cwd=version_dir,
            )
        except subprocess.TimeoutExpired as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise BrokerError(
                f"mvn did not finish downloading Kafka {cfg.kafka_version} within "
                f"{_MVN_TIMEOUT_S:.0f} s",
                hint="check the network access to Maven Central (or your mirror)",
            ) from exc
        jars = sorted(p.name for p in partial.glob("*.jar")) if partial.is_dir() else []
        kafka_jar = f"kafka_2.13-{cfg.kafka_version}.jar"
        if done.returncode != 0 or kafka_jar not in jars:
            shutil.rmtree(partial, ignore_errors=True)
            output = _ANSI.sub("", (done.stdout or "") + (done.stderr or ""))
            lines = [ln for ln in output.splitlines() if ln.strip()][-_TAIL_LINES:]
            body = "\n".join(f"    {ln}" for ln in lines) or "    (no output)"
            what = (
                f"exited with code {done.returncode}"
                if done.returncode
                else f"succeeded but {kafka_jar} is missing"
            )
            raise BrokerError(
                f"mvn {what} while downloading Kafka {cfg.kafka_version} with {pom}:\n{body}",
                hint=f"check that Maven Central is reachable (proxy or mirror in "
                f"~/.m2/settings.xml) and that Kafka {cfg.kafka_version} exists; rerun: "
                f"{' '.join(cmd)}",
            )
        if libs.exists():
            shutil.rmtree(libs)
        partial.rename(libs)
        _atomic_write(marker, json.dumps({"kafka_version": cfg.kafka_version, "jars": jars}))
        say(f"downloaded {len(jars)} jars in {time.monotonic() - started:.0f} s")
    return libs


# --------------------------------------------------------------------------- storage


def _render_properties(cfg: BrokerConfig) -> str:
    """server.properties: the template filled in, plus the SASL listener when configured
    (without one, exactly the template's text)."""
    template = _config_file("server.properties.template").read_text(encoding="utf-8")
    text = template.format(
        node_id=NODE_ID,
        host=cfg.host,
        port=cfg.port,
        controller_port=cfg.controller_port,
        data_dir=cfg.data_dir.resolve().as_posix(),
    )
    return text if cfg.sasl_port is None else _with_sasl_listener(cfg, text)


#: the name (and security protocol) of the optional SASL client listener
_SASL_LISTENER_NAME = "SASL_PLAINTEXT"


def _with_sasl_listener(cfg: BrokerConfig, text: str) -> str:
    """``text`` with a SASL_PLAINTEXT listener (mechanism PLAIN, ``cfg.sasl_users``) added
    to ``listeners``, ``advertised.listeners`` and ``listener.security.protocol.map``, and
    the listener's settings appended. Inter-broker and controller traffic stay PLAINTEXT."""
    endpoint = f"{_SASL_LISTENER_NAME}://{cfg.host}:{cfg.sasl_port}"
    extend = {
        "listeners": endpoint,
        "advertised.listeners": endpoint,
        "listener.security.protocol.map": f"{_SASL_LISTENER_NAME}:{_SASL_LISTENER_NAME}",
    }
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        key, sep, value = line.rstrip("\n").partition("=")
        if sep and key.strip() in extend:
            lines[i] = f"{key}={value.rstrip()},{extend.pop(key.strip())}\n"
    if extend:
        raise BrokerError(
            f"server.properties.template has no {', '.join(sorted(extend))} to add the "
            "SASL listener to",
            hint=f"restore {CONFIG_DIR / 'server.properties.template'} from the project",
        )
    users = " ".join(f'user_{name}="{pw}"' for name, pw in cfg.sasl_users.items())
    prefix = f"listener.name.{_SASL_LISTENER_NAME.lower()}"
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    lines += [
        "\n",
        "# A SASL_PLAINTEXT client listener (PLAIN): local_broker.sasl_port / sasl_users.\n",
        "sasl.enabled.mechanisms=PLAIN\n",
        f"{prefix}.plain.sasl.jaas.config="
        f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};\n",
    ]
    return "".join(lines)


def _new_cluster_id() -> str:
    """A Kafka ``Uuid``: 16 random bytes, URL-safe base64 without padding, no leading '-'."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _check_meta(cfg: BrokerConfig) -> bool:
    """True when ``data/`` is already formatted for this broker; raise when it cannot be used."""
    meta = cfg.data_dir / "meta.properties"
    if not meta.is_file():
        return False
    try:
        props = _parse_properties(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokerError(f"cannot read {meta}: {exc}", hint=WIPE_HINT) from exc
    problem = None
    if props.get("version") != "1":
        problem = (
            f"has meta.properties version={props.get('version')!r} (not a KRaft data dir, "
            "or written by an incompatible Kafka)"
        )
    elif props.get("node.id") != str(NODE_ID):
        problem = f"belongs to node.id={props.get('node.id')!r}, not {NODE_ID}"
    elif not props.get("cluster.id"):
        problem = "has no cluster.id in meta.properties"
    if problem:
        raise BrokerError(
            f"the broker data dir {cfg.data_dir} {problem}; it was formatted for a different "
            "cluster or Kafka",
            hint=WIPE_HINT,
        )
    return True


def _jvm_flags(cfg: BrokerConfig, libs: Path) -> list[str]:
    return [
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={_config_file('log4j2.yaml')}",
        f"-Dkafka.logs.dir={cfg.logs_dir}",
        "-cp",
        f"{libs}{os.sep}*",
    ]


def _format_storage(cfg: BrokerConfig, java: str, libs: Path, say: Progress) -> None:
    cluster_id = _new_cluster_id()
    say(f"formatting KRaft storage in {cfg.data_dir} (cluster id {cluster_id})")
    cmd = [
        java,
        "-Xmx256m",
        *_jvm_flags(cfg, libs),
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cluster_id,
        "-c",
        str(cfg.properties_file),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BrokerError("formatting the KRaft storage took more than 120 s") from exc
    if done.returncode != 0:
        lines = (done.stdout + done.stderr).strip().splitlines()[-_TAIL_LINES:]
        body = "\n".join(f"    {ln}" for ln in lines)
        raise BrokerError(
            f"formatting the KRaft storage in {cfg.data_dir} failed "
            f"(exit code {done.returncode}):\n{body}",
            hint=WIPE_HINT,
        )


# --------------------------------------------------------------------------- readiness


def ping(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """Whether a broker at ``bootstrap`` answers a metadata request within ``timeout_s``."""
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=min(timeout_s, 1.0)):
            pass
    except (OSError, ValueError):
        return False
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "logger": _rdkafka_log,  # librdkafka's connection errors go to logging, not stderr
        "socket.connection.setup.timeout.ms": max(1000, int(timeout_s * 1000)),
    }
    admin = AdminClient(conf)
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        log.debug("broker at %s not ready: %s", bootstrap, exc)
        return False
    return bool(metadata.brokers)


def _failure_hint(cfg: BrokerConfig, tails: str) -> str:
    # Only error lines: the config dump at startup mentions node.id, cluster.id, ...
    text = "\n".join(
        line
        for line in tails.splitlines()
        if any(word in line for word in ("ERROR", "FATAL", "Exception", "Error", "rror:"))
    )
    if "Address already in use" in text or "BindException" in text:
        *first, last = _listeners(cfg)
        ports = f"{', '.join(str(listener.port) for listener in first)} or {last.port}"
        settings = " / ".join(f"`local_broker.{lst.setting}`" for lst in (*first, last))
        return f"port {ports} on {cfg.host} is taken; free it or change the {settings} setting"
    if "UnsupportedClassVersionError" in text:
        return "Kafka 4 needs Java 17 or newer; install it or point JAVA_HOME at it"
    data_markers = (
        "meta.properties",
        "cluster.id",
        "node.id",
        "InconsistentClusterIdException",
        "metadata.version",
        "MetadataVersion",
        "bootstrap.checkpoint",
        "CorruptRecordException",
        "not formatted",
        "KafkaStorageException",
        "directory.id",
    )
    if any(marker in text for marker in data_markers):
        return WIPE_HINT
    return f"see {cfg.log_path} and {cfg.out_file}"


def _kill(pid: int, timeout_s: float) -> None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL and wait again."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return
            time.sleep(0.1)
        if sig == signal.SIGTERM:
            log.warning("Kafka broker pid %d ignored SIGTERM for %.0f s; killing it", pid, wait_s)
    if _pid_alive(pid):
        raise BrokerError(f"could not stop the Kafka broker (pid {pid}), even with SIGKILL")


def _accepts(address: str, timeout_s: float = 1.0) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def _wait_ready(
    cfg: BrokerConfig, pid: int, bootstrap: str, timeout_s: float, log_start: int = 0
) -> None:
    """Poll until the broker answers; BrokerError if its JVM exits first or on timeout.

    With a SASL listener it must also accept connections (a metadata request there would
    need a user's password). The error quotes what the broker logged after byte
    ``log_start`` of server.log.
    """
    deadline = time.monotonic() + timeout_s

    def probe() -> bool:
        if not _pid_alive(pid):
            tails = _tails(cfg, log_start)
            raise BrokerError(
                f"the Kafka broker (pid {pid}) exited during startup:\n{tails}",
                hint=_failure_hint(cfg, tails),
            )
        remaining = deadline - time.monotonic()
        if not ping(bootstrap, timeout_s=max(0.5, min(3.0, remaining))):
            return False
        return cfg.sasl_bootstrap is None or _accepts(cfg.sasl_bootstrap)

    retrying = Retrying(
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(0.25),
        retry=retry_if_result(lambda ok: not ok),
        reraise=True,
    )
    try:
        retrying(probe)
    except RetryError as exc:
        where = bootstrap if cfg.sasl_bootstrap is None else f"{bootstrap} and {cfg.sasl_bootstrap}"
        raise BrokerError(
            f"the Kafka broker (pid {pid}) did not answer on {where} within "
            f"{timeout_s:.0f} s:\n{_tails(cfg, log_start)}",
            hint=f"see {cfg.log_path}; a slow machine may need a longer timeout "
            "(`stream-ae kafka up --timeout`)",
        ) from exc


# --------------------------------------------------------------------------- public API


def _absolute(cfg: BrokerConfig) -> BrokerConfig:
    """Paths made absolute: the JVM runs in the state dir and the pid check compares paths."""
    return replace(
        cfg,
        cache_dir=cfg.cache_dir.expanduser().absolute(),
        state_dir=cfg.state_dir.expanduser().absolute(),
    )


def status(cfg: BrokerConfig) -> BrokerInfo | None:
    """The running broker of ``cfg.state_dir`` (its JVM is alive), or None.

    It does not check that the broker already answers; see :func:`ping`.
    """
    cfg = _absolute(cfg)
    pid = _read_pid(cfg)
    if pid is None or not _is_our_broker(cfg, pid):
        return None
    return _info(cfg, pid)


def start(
    cfg: BrokerConfig, *, timeout_s: float = 90.0, progress: Progress | None = None
) -> BrokerInfo:
    """Start the broker (or find it running) and return once it answers requests.

    Idempotent: when the broker of ``cfg.state_dir`` already runs, wait until it serves and
    return it. The first start downloads the jars (:func:`ensure_jars`) and formats the
    KRaft storage; later starts reuse both (topics and offsets are kept).
    """
    say = _reporter(progress)
    _validate(cfg)
    cfg = _absolute(cfg)
    with _locked(cfg.state_dir / ".lock"):
        running = status(cfg)
        if running is not None:
            if running.bootstrap != cfg.bootstrap:
                raise BrokerError(
                    f"the local Kafka broker of {cfg.state_dir} is already running on "
                    f"{running.bootstrap} (pid {running.pid}), not on {cfg.bootstrap}",
                    hint="stop it with `stream-ae kafka down` to apply the new port, or "
                    "use the running address",
                )
            if running.sasl_bootstrap != cfg.sasl_bootstrap:
                now = running.sasl_bootstrap or "none"
                want = cfg.sasl_bootstrap or "none"
                raise BrokerError(
                    f"the local Kafka broker of {cfg.state_dir} is already running (pid "
                    f"{running.pid}) with SASL listener {now}, not {want}",
                    hint="stop it with `stream-ae kafka down` to apply local_broker.sasl_port",
                )
            say(f"Kafka broker already running (pid {running.pid}) on {running.bootstrap}")
            if running.kafka_version != cfg.kafka_version:
                say(
                    f"note: it runs Kafka {running.kafka_version}, not {cfg.kafka_version}; "
                    "`stream-ae kafka down` and `up` again to switch"
                )
            _wait_ready(cfg, running.pid, running.bootstrap, timeout_s)
            return running

        stale = _read_pid(cfg)
        if stale is not None:
            say(f"removing stale pid file {cfg.pid_file} (pid {stale} is not running)")
            _remove_run_files(cfg)

        _check_ports(cfg)
        java = _java()
        libs = ensure_jars(cfg, progress)

        for directory in (cfg.data_dir, cfg.logs_dir):
            directory.mkdir(parents=True, exist_ok=True)
        # with SASL users it holds their passwords: readable by its owner only
        _atomic_write(
            cfg.properties_file,
            _render_properties(cfg),
            mode=None if cfg.sasl_port is None else 0o600,
        )
        if not _check_meta(cfg):
            _format_storage(cfg, java, libs, say)

        say(f"starting Kafka {cfg.kafka_version} on {cfg.bootstrap} (log: {cfg.log_path})")
        started = time.monotonic()
        log_start = _size(cfg.log_path)
        pid = _launch(cfg, java, libs)
        _atomic_write(cfg.pid_file, f"{pid}\n")
        _atomic_write(
            cfg.info_file,
            json.dumps(
                {
                    "pid": pid,
                    "bootstrap": cfg.bootstrap,
                    "kafka_version": cfg.kafka_version,
                    "controller_port": cfg.controller_port,
                    **({} if cfg.sasl_port is None else {"sasl_bootstrap": cfg.sasl_bootstrap}),
                    "started_at": time.time(),
                }
            ),
        )
        try:
            _wait_ready(cfg, pid, cfg.bootstrap, timeout_s, log_start)
        except BrokerError:
            with contextlib.suppress(BrokerError):
                _kill(pid, 10.0)
            _remove_run_files(cfg)
            raise
        sasl = "" if cfg.sasl_bootstrap is None else f" (SASL/PLAIN on {cfg.sasl_bootstrap})"
        say(f"Kafka broker ready on {cfg.bootstrap}{sasl} after {time.monotonic() - started:.1f} s")
        return _info(cfg, pid)


def _launch(cfg: BrokerConfig, java: str, libs: Path) -> int:
    """Start the JVM detached (own session, reparented away from us); return its pid."""
    cmd = [
        java,
        f"-Xmx{cfg.heap}",
        f"-Xms{cfg.heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError",
        *_jvm_flags(cfg, libs),
        "kafka.Kafka",
        str(cfg.properties_file),
    ]
    # sh backgrounds the JVM and exits at once: the JVM is not our child, so it survives
    # us and never lingers as our zombie; its output goes to broker.out.
    script = 'out="$1"; shift; "$@" </dev/null >"$out" 2>&1 & echo $!'
    try:
        done = subprocess.run(
            ["/bin/sh", "-c", script, "sh", str(cfg.out_file), *cmd],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            start_new_session=True,
            cwd=cfg.state_dir,
        )
        return int(done.stdout.strip())
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise BrokerError(f"could not launch the Kafka broker JVM: {exc}") from exc


def stop(cfg: BrokerConfig, *, timeout_s: float = 30.0, wipe: bool = False) -> bool:
    """Stop the broker of ``cfg.state_dir``; return whether one was running.

    SIGTERM (a clean shutdown), SIGKILL after ``timeout_s``. ``wipe`` then deletes the data
    dir (all topics, offsets and the cluster id); the logs are kept.
    """
    cfg = _absolute(cfg)
    if not cfg.state_dir.exists():
        return False
    with _locked(cfg.state_dir / ".lock"):
        pid = _read_pid(cfg)
        stopped = False
        if pid is not None and _is_our_broker(cfg, pid):
            log.info("stopping Kafka broker pid %d", pid)
            _kill(pid, timeout_s)
            stopped = True
        _remove_run_files(cfg)
        if wipe and cfg.data_dir.exists():
            log.info("deleting %s", cfg.data_dir)
            shutil.rmtree(cfg.data_dir)
    return stopped
