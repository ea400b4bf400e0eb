"""Unit tests of stream_ae.io.local_broker that need neither a JVM nor Maven.

``java`` and ``mvn`` are replaced by small shell scripts where a test needs them.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stream_ae.cli.kafka_cmd import make_kafka_app
from stream_ae.errors import BrokerError
from stream_ae.io import local_broker as lb
from stream_ae.io.local_broker import BrokerConfig

HAS_PROC = Path("/proc/self/stat").exists()


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def cfg(tmp_path: Path) -> BrokerConfig:
    return BrokerConfig(
        cache_dir=tmp_path / "cache",
        state_dir=tmp_path / "state",
        port=lb.free_port(),
        controller_port=lb.free_port(),
    )


@pytest.fixture
def fake_mvn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `mvn` on PATH that "downloads" two jars and counts its runs in calls.log."""
    bin_dir = tmp_path / "bin"
    _script(
        bin_dir / "mvn",
        f"""echo run >> "{bin_dir}/calls.log"
for arg in "$@"; do
  case "$arg" in
    -DoutputDirectory=*) out="${{arg#-DoutputDirectory=}}" ;;
    -Dkafka.version=*) version="${{arg#-Dkafka.version=}}" ;;
  esac
done
mkdir -p "$out"
echo jar > "$out/kafka_2.13-$version.jar"
echo jar > "$out/kafka-clients-$version.jar"
""",
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def _calls(bin_dir: Path) -> int:
    log = bin_dir / "calls.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.fixture
def fake_java(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """JAVA_HOME whose bin/java is a script the test writes (exits with an error by default)."""
    java_home = tmp_path / "jdk"
    _script(java_home / "bin" / "java", 'echo "Error: boom from fake java" >&2\nexit 1\n')
    monkeypatch.setenv("JAVA_HOME", str(java_home))
    yield java_home / "bin" / "java"


def _formatted(cfg: BrokerConfig, node_id: int = 1, version: int = 1) -> None:
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    (cfg.data_dir / "meta.properties").write_text(
        f"#\nnode.id={node_id}\nversion={version}\ncluster.id=nbqz6NflTgah6kMZyQdzxQ\n"
    )


# ----------------------------------------------------------------------------- config


def test_config_defaults_and_paths() -> None:
    cfg = BrokerConfig()
    assert cfg.kafka_version == "4.1.1"
    assert cfg.bootstrap == "127.0.0.1:9092"
    assert cfg.controller_port == 9093
    assert cfg.libs_dir == Path.home() / ".cache" / "stream_ae" / "kafka" / "4.1.1" / "libs"
    assert cfg.data_dir == cfg.state_dir / "data"
    assert cfg.log_path == cfg.state_dir / "logs" / "server.log"
    assert cfg.pid_file.name == "broker.pid"


def test_rendered_properties(cfg: BrokerConfig) -> None:
    props = lb._parse_properties(lb._render_properties(lb._absolute(cfg)))
    h, p, c = cfg.host, cfg.port, cfg.controller_port
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == f"1@{h}:{c}"
    assert props["listeners"] == f"PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}"
    assert props["advertised.listeners"] == f"PLAINTEXT://{h}:{p}"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str(cfg.data_dir.absolute())
    assert props["auto.create.topics.enable"] == "false"
    assert props["num.partitions"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "1", key
    assert not any("{" in v or "}" in v for v in props.values())


def test_without_sasl_the_rendering_is_the_template_byte_for_byte(cfg: BrokerConfig) -> None:
    # existing state dirs (and their server.properties) must not change with the SASL option
    cfg = lb._absolute(cfg)
    template = (lb.CONFIG_DIR / "server.properties.template").read_text(encoding="utf-8")
    expected = template.format(
        node_id=1,
        host=cfg.host,
        port=cfg.port,
        controller_port=cfg.controller_port,
        data_dir=cfg.data_dir.resolve().as_posix(),
    )
    assert lb._render_properties(cfg) == expected
    assert "SASL" not in expected and "sasl." not in expected


def test_rendered_properties_with_a_sasl_listener(cfg: BrokerConfig) -> None:
    sasl = replace(cfg, sasl_port=lb.free_port(), sasl_users={"alice": "a-pw", "bob": "b pw#1"})
    text = lb._render_properties(lb._absolute(sasl))
    props = lb._parse_properties(text)
    h, p, c, s = cfg.host, cfg.port, cfg.controller_port, sasl.sasl_port
    assert (
        props["listeners"] == f"PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c},SASL_PLAINTEXT://{h}:{s}"
    )
    assert props["advertised.listeners"] == f"PLAINTEXT://{h}:{p},SASL_PLAINTEXT://{h}:{s}"
    assert props["listener.security.protocol.map"] == (
        "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"
    )
    # brokers and the controller keep talking PLAINTEXT
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["sasl.enabled.mechanisms"] == "PLAIN"
    assert props["listener.name.sasl_plaintext.plain.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        'user_alice="a-pw" user_bob="b pw#1";'
    )
    # everything else as without SASL
    plain = lb._parse_properties(lb._render_properties(lb._absolute(cfg)))
    changed = {k for k in props if props[k] != plain.get(k)}
    assert changed == {
        "listeners",
        "advertised.listeners",
        "listener.security.protocol.map",
        "sasl.enabled.mechanisms",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config",
    }
    assert sasl.sasl_bootstrap == f"{h}:{s}" and cfg.sasl_bootstrap is None
    assert "a-pw" not in repr(sasl)  # repr leaves the users out


def test_cluster_id_is_a_kafka_uuid() -> None:
    for _ in range(200):
        cid = lb._new_cluster_id()
        assert len(cid) == 22
        assert not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"port": 7000, "controller_port": 7000}, "both 7000"),
        ({"port": 0}, "port=0"),
        ({"controller_port": 70000}, "controller_port=70000"),
        ({"heap": "1k"}, "heap="),
        ({"heap": "lots"}, "heap="),
        ({"kafka_version": "latest"}, "kafka_version="),
        ({"host": "::1"}, "host="),
        ({"sasl_port": 0, "sasl_users": {"u": "p"}}, "sasl_port=0"),
        ({"sasl_port": 65536, "sasl_users": {"u": "p"}}, "sasl_port=65536"),
        ({"sasl_port": "port", "sasl_users": {"u": "p"}}, "port and sasl_port are both"),
        (
            {"sasl_port": "controller_port", "sasl_users": {"u": "p"}},
            "controller_port and sasl_port are both",
        ),
        ({"sasl_port": 7001}, "sasl_users is empty"),
        ({"sasl_users": {"u": "p"}}, "sasl_port is not"),
        ({"sasl_port": 7001, "sasl_users": {"a b": "p"}}, "user named 'a b'"),
        ({"sasl_port": 7001, "sasl_users": {"u.x": "p"}}, "user named 'u.x'"),
        ({"sasl_port": 7001, "sasl_users": {"u": ""}}, "password of SASL user 'u'"),
        ({"sasl_port": 7001, "sasl_users": {"u": 'se"cret'}}, "password of SASL user 'u'"),
        ({"sasl_port": 7001, "sasl_users": {"u": "se\\cret"}}, "password of SASL user 'u'"),
        ({"sasl_port": 7001, "sasl_users": {"u": "sécret"}}, "password of SASL user 'u'"),
        ({"sasl_port": 7001, "sasl_users": {"u": "se\ncret"}}, "password of SASL user 'u'"),
    ],
)
def test_invalid_settings(cfg: BrokerConfig, changes: dict[str, object], fragment: str) -> None:
    if changes.get("sasl_port") in ("port", "controller_port"):  # the same as that one
        changes = {**changes, "sasl_port": getattr(cfg, str(changes["sasl_port"]))}
    bad = replace(cfg, **changes)  # type: ignore[arg-type]
    with pytest.raises(BrokerError, match="invalid local broker setting") as err:
        lb.start(bad)
    assert fragment in str(err.value)
    assert "cret" not in str(err.value)  # a password is never quoted back
    assert not bad.state_dir.exists()


# ----------------------------------------------------------------------------- pid file


def test_nothing_running(cfg: BrokerConfig) -> None:
    assert lb.status(cfg) is None
    assert lb.stop(cfg) is False
    assert not cfg.state_dir.exists()  # querying creates nothing


def test_stale_pid_file_is_not_running_and_is_cleaned(cfg: BrokerConfig) -> None:
    cfg.state_dir.mkdir(parents=True)
    cfg.pid_file.write_text(f"{_dead_pid()}\n")
    assert lb.status(cfg) is None
    assert lb.stop(cfg) is False
    assert not cfg.pid_file.exists()


def test_garbage_pid_file(cfg: BrokerConfig) -> None:
    cfg.state_dir.mkdir(parents=True)
    cfg.pid_file.write_text("not a pid")
    assert lb.status(cfg) is None
    assert lb.stop(cfg) is False


def test_reused_pid_is_not_our_broker_and_is_not_killed(cfg: BrokerConfig) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        cfg.state_dir.mkdir(parents=True)
        cfg.pid_file.write_text(f"{sleeper.pid}\n")
        if HAS_PROC:
            assert lb.status(cfg) is None
            assert lb.stop(cfg, timeout_s=1) is False
            assert sleeper.poll() is None  # still alive
    finally:
        sleeper.kill()
        sleeper.wait()


def _cmdline_reads(monkeypatch: pytest.MonkeyPatch, pid: int, empty_reads: int) -> list[int]:
    """The first ``empty_reads`` reads of ``/proc/<pid>/cmdline`` are empty, as mid-exec."""
    calls = [0]
    real = Path.read_bytes
    target = Path("/proc") / str(pid) / "cmdline"

    def read_bytes(path: Path) -> bytes:
        if path == target:
            calls[0] += 1
            if calls[0] <= empty_reads:
                return b""
        return real(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    return calls


@pytest.mark.skipif(not HAS_PROC, reason="reads /proc")
def test_a_pid_read_mid_exec_is_not_trusted_as_our_broker(
    cfg: BrokerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Just after a process starts, the kernel shows an empty command line while it execs;
    # that once read as "cannot tell" and the pid was trusted (a flaky CI failure).
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        cfg.state_dir.mkdir(parents=True)
        cfg.pid_file.write_text(f"{sleeper.pid}\n")
        calls = _cmdline_reads(monkeypatch, sleeper.pid, empty_reads=3)
        assert lb.status(cfg) is None
        assert calls[0] == 4  # waited the exec out, then read "sleep 30"
        assert lb._cmdline(sleeper.pid) == "sleep 30"
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.skipif(not HAS_PROC, reason="reads /proc")
def test_a_command_line_that_stays_empty_is_not_our_broker(
    cfg: BrokerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A kernel thread has no command line at all: never a JVM, so never trusted.
    monkeypatch.setattr(lb, "_EXEC_WAIT_S", 0.05)
    cfg.state_dir.mkdir(parents=True)
    cfg.pid_file.write_text(f"{os.getpid()}\n")
    _cmdline_reads(monkeypatch, os.getpid(), empty_reads=10**6)
    assert lb._cmdline(os.getpid()) == ""
    assert lb.status(cfg) is None


def test_exited_unreaped_child_is_not_alive() -> None:
    child = subprocess.Popen(["true"])
    time.sleep(0.3)  # exited, not yet waited for: a zombie
    assert not lb._pid_alive(child.pid)
    child.wait()
    assert not lb._pid_alive(child.pid)
    assert lb._pid_alive(os.getpid())


# ----------------------------------------------------------------------------- ports


@pytest.mark.parametrize("which", ["port", "controller_port", "sasl_port"])
def test_port_in_use(cfg: BrokerConfig, which: str) -> None:
    if which == "sasl_port":
        cfg = replace(cfg, sasl_port=lb.free_port(), sasl_users={"u": "p"})
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((cfg.host, 0))
        sock.listen()
        busy = sock.getsockname()[1]
        taken = replace(cfg, **{which: busy})
        with pytest.raises(BrokerError) as err:
            lb.start(taken)
    message = str(err.value)
    assert f"port {busy} on 127.0.0.1 is already in use" in message
    assert f"`local_broker.{which}` setting" in message
    assert f"STREAM_AE_LOCAL_BROKER__{which.upper()}" in message
    if HAS_PROC:
        assert f"pid {os.getpid()}" in message  # names the process that holds it
    assert not cfg.libs_dir.exists()  # failed before downloading anything


def test_free_port_is_bindable() -> None:
    port = lb.free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


# ----------------------------------------------------------------------------- jars


def test_ensure_jars_downloads_once(cfg: BrokerConfig, fake_mvn: Path) -> None:
    messages: list[str] = []
    libs = lb.ensure_jars(cfg, progress=messages.append)
    assert libs == cfg.libs_dir
    assert (libs / "kafka_2.13-4.1.1.jar").is_file()
    assert _calls(fake_mvn) == 1
    assert any("downloading Kafka 4.1.1" in m for m in messages)
    assert not list(libs.parent.glob("libs.partial-*"))

    assert lb.ensure_jars(cfg) == libs
    assert _calls(fake_mvn) == 1  # cached

    (libs / "kafka-clients-4.1.1.jar").unlink()  # incomplete: downloaded again
    lb.ensure_jars(cfg)
    assert _calls(fake_mvn) == 2

    (libs.parent / "complete.json").unlink()  # interrupted download: no marker
    lb.ensure_jars(cfg)
    assert _calls(fake_mvn) == 3
    assert json.loads((libs.parent / "complete.json").read_text())["jars"] == [
        "kafka-clients-4.1.1.jar",
        "kafka_2.13-4.1.1.jar",
    ]


def test_ensure_jars_mvn_failure(
    cfg: BrokerConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "badbin"
    lines = "\n".join(f"echo 'noise line {i}'" for i in range(40))
    _script(
        bin_dir / "mvn",
        f"{lines}\necho '[ERROR] Could not resolve dependencies: kafka_2.13:9.9.9' >&2\nexit 1\n",
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(BrokerError) as err:
        lb.ensure_jars(cfg)
    message = str(err.value)
    assert "exited with code 1" in message
    assert "Could not resolve dependencies" in message
    assert "noise line 39" in message and "noise line 5" not in message  # last lines only
    assert "Maven Central" in err.value.hint
    assert not cfg.libs_dir.exists()
    assert not list(cfg.libs_dir.parent.glob("libs.partial-*"))


def test_mvn_not_found(cfg: BrokerConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BrokerError, match=r"Maven \(mvn\) not found") as err:
        lb.ensure_jars(cfg)
    assert "install Maven" in err.value.hint


def test_java_not_found(cfg: BrokerConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BrokerError, match="java not found") as err:
        lb.start(cfg)
    assert "Java 17" in err.value.hint


# ----------------------------------------------------------------------------- start failures


@pytest.mark.parametrize(
    ("node_id", "version", "fragment"),
    [(3, 1, "node.id='3'"), (1, 0, "version='0'")],
)
@pytest.mark.usefixtures("fake_mvn", "fake_java")
def test_data_dir_of_another_cluster(
    cfg: BrokerConfig, node_id: int, version: int, fragment: str
) -> None:
    _formatted(cfg, node_id=node_id, version=version)
    with pytest.raises(BrokerError) as err:
        lb.start(cfg)
    assert fragment in str(err.value)
    assert "stream-ae kafka down --wipe" in err.value.hint
    assert lb.status(cfg) is None


def test_jvm_exiting_at_startup_is_reported(
    cfg: BrokerConfig, fake_mvn: Path, fake_java: Path
) -> None:
    _formatted(cfg)
    cfg.pid_file.parent.mkdir(parents=True, exist_ok=True)
    cfg.pid_file.write_text(f"{_dead_pid()}\n")  # stale: cleaned, not an error
    messages: list[str] = []
    with pytest.raises(BrokerError, match="exited during startup") as err:
        lb.start(cfg, timeout_s=20, progress=messages.append)
    assert "boom from fake java" in str(err.value)
    assert any("stale pid file" in m for m in messages)
    assert not cfg.pid_file.exists()
    assert lb.status(cfg) is None


def test_jvm_that_never_answers_times_out_and_is_killed(
    cfg: BrokerConfig, fake_mvn: Path, fake_java: Path
) -> None:
    _script(fake_java, "exec sleep 60\n")
    _formatted(cfg)
    started = time.monotonic()
    with pytest.raises(BrokerError, match="did not answer") as err:
        lb.start(cfg, timeout_s=1.5)
    assert time.monotonic() - started < 15
    assert "--timeout" in err.value.hint
    assert not cfg.pid_file.exists()


def test_start_from_a_formatted_data_dir_renders_properties(
    cfg: BrokerConfig, fake_mvn: Path, fake_java: Path
) -> None:
    _formatted(cfg)
    with pytest.raises(BrokerError):
        lb.start(cfg, timeout_s=5)
    rendered = cfg.properties_file.read_text()
    assert f"PLAINTEXT://127.0.0.1:{cfg.port}" in rendered
    assert (cfg.data_dir / "meta.properties").exists()  # not reformatted


@pytest.mark.usefixtures("fake_mvn", "fake_java")
def test_with_sasl_users_the_properties_file_is_private(cfg: BrokerConfig) -> None:
    _formatted(cfg)
    with pytest.raises(BrokerError):
        lb.start(cfg, timeout_s=5)
    assert "SASL" not in cfg.properties_file.read_text()
    sasl = replace(cfg, sasl_port=lb.free_port(), sasl_users={"alice": "alice-pw"})
    with pytest.raises(BrokerError):
        lb.start(sasl, timeout_s=5)
    assert f"SASL_PLAINTEXT://127.0.0.1:{sasl.sasl_port}" in sasl.properties_file.read_text()
    assert stat.S_IMODE(sasl.properties_file.stat().st_mode) == 0o600


# ----------------------------------------------------------------------------- CLI


def test_cli_status_and_down_when_not_running(cfg: BrokerConfig) -> None:
    app = make_kafka_app(lambda: cfg)
    runner = CliRunner()
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 1
    assert "not running" in result.output
    result = runner.invoke(app, ["down"])
    assert result.exit_code == 0
    assert "no local Kafka broker was running" in result.output


def test_cli_up_lets_broker_error_propagate(cfg: BrokerConfig) -> None:
    bad = replace(cfg, heap="tiny")
    result = CliRunner().invoke(make_kafka_app(lambda: bad), ["up"])
    assert result.exit_code != 0
    assert isinstance(result.exception, BrokerError)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX only")
def test_config_files_exist() -> None:
    for name in ("pom.xml", "server.properties.template", "log4j2.yaml"):
        assert (lb.CONFIG_DIR / name).is_file(), name


def test_cli_describes_the_sasl_listener(tmp_path: Path) -> None:
    from stream_ae.cli.kafka_cmd import _describe

    info = lb.BrokerInfo("127.0.0.1:9092", 1, tmp_path / "log", tmp_path, "4.1.1")
    assert "sasl:" not in _describe(info)
    with_sasl = replace(info, sasl_bootstrap="127.0.0.1:9094")
    assert "sasl:      127.0.0.1:9094 (PLAIN)" in _describe(with_sasl)
