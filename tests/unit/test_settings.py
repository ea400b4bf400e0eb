"""load_settings: defaults, every source and its precedence, errors, secrets; Kafka client dicts."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from stream_ae.errors import ConfigError
from stream_ae.io.kafka import (
    Admin,
    InputConsumer,
    OutputProducer,
    client_config,
    read_range,
    redacted,
)
from stream_ae.settings import KafkaSettings, load_settings

SECRET = "hunter2-do-not-print"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No STREAM_AE_* variable from the caller, and a cwd without config/stream_ae.toml."""
    for name in list(os.environ):
        if name.startswith("STREAM_AE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def config_error(*args: object, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(*args, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


# -- defaults --------------------------------------------------------------------------------


def test_defaults_without_any_source() -> None:
    s = load_settings()
    assert s.log_level == "INFO"
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert s.kafka.security_protocol == "PLAINTEXT"
    assert s.kafka.sasl_password is None
    assert s.kafka.extra == {}
    assert (s.window.sample_period_ms, s.window.size, s.window.hop) == (1000, 64, 16)
    assert s.window.allowed_lateness_ms == 5000
    assert s.topics.readings == "sensors.readings"
    assert s.topics.anomalies == "maintenance.anomalies"
    assert s.topics.publish_scores is False
    assert (s.decide.high_ratio, s.decide.critical_ratio, s.decide.top_channels) == (2.0, 4.0, 3)
    assert s.scorer.exactly_once is False
    assert s.model.path == Path("artifacts")


def test_gap_alert_is_one_model_window_by_default_else_whole_grid_steps() -> None:
    from types import SimpleNamespace
    from typing import Any, cast

    from stream_ae.service import model_grid

    md = cast(Any, SimpleNamespace(sample_period_ms=500, window=32, hop=8, channels=["a", "b"]))
    assert load_settings().window.gap_alert_ms is None
    assert model_grid(md, load_settings()).alert_after == 32  # the model's W, not window.size
    assert model_grid(md, load_settings(overrides=["window.gap_alert_ms=1200"])).alert_after == 3
    assert model_grid(md, load_settings(overrides=["window.gap_alert_ms=0"])).alert_after == 0
    assert "window.gap_alert_ms" in config_error(overrides=["window.gap_alert_ms=-1"])


def test_dead_letter_topic_defaults_to_readings_dot_dlq() -> None:
    assert load_settings().topics.dead_letter_topic == "sensors.readings.dlq"
    moved = load_settings(overrides=["topics.readings=plant.raw"])
    assert moved.topics.dead_letter == ""
    assert moved.topics.dead_letter_topic == "plant.raw.dlq"
    explicit = load_settings(overrides=["topics.readings=plant.raw", "topics.dead_letter=bad"])
    assert explicit.topics.dead_letter_topic == "bad"


# -- sources and precedence ------------------------------------------------------------------


def test_toml_file_overrides_defaults_field_by_field(tmp_path: Path) -> None:
    f = write(tmp_path / "my.toml", '[window]\nsize = 32\n\n[topics]\nreadings = "r"\n')
    s = load_settings(f)
    assert s.window.size == 32
    assert s.window.hop == 16  # not in the file: default
    assert s.topics.readings == "r"
    assert s.topics.dead_letter_topic == "r.dlq"


def test_default_config_file_in_cwd_is_read(clean_env: Path) -> None:
    write(clean_env / "config" / "stream_ae.toml", "[window]\nsize = 48\n")
    assert load_settings().window.size == 48


def test_stream_ae_config_variable_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = write(tmp_path / "env.toml", "[window]\nsize = 40\n")
    monkeypatch.setenv("STREAM_AE_CONFIG", str(f))
    assert load_settings().window.size == 40
    # an explicit file wins over the variable
    g = write(tmp_path / "explicit.toml", "[window]\nsize = 24\n")
    assert load_settings(g).window.size == 24


def test_env_beats_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = write(tmp_path / "c.toml", "[window]\nsize = 32\nhop = 8\n")
    monkeypatch.setenv("STREAM_AE_WINDOW__HOP", "4")
    monkeypatch.setenv("STREAM_AE_KAFKA__BOOTSTRAP_SERVERS", "broker-a:9092,broker-b:9092")
    s = load_settings(f)
    assert s.window.hop == 4  # env
    assert s.window.size == 32  # file, same section: sources merge per field
    assert s.kafka.bootstrap_servers == "broker-a:9092,broker-b:9092"


def test_flags_beat_env_and_none_flags_fall_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_AE_WINDOW__SIZE", "40")
    monkeypatch.setenv("STREAM_AE_SCORER__GROUP_ID", "from-env")
    s = load_settings(flags={"window": {"size": 60}, "scorer": {"group_id": None}})
    assert s.window.size == 60
    assert s.scorer.group_id == "from-env"  # a None flag means "not given"


def test_set_overrides_beat_flags_env_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = write(tmp_path / "c.toml", "[window]\nsize = 32\n")
    monkeypatch.setenv("STREAM_AE_WINDOW__SIZE", "40")
    s = load_settings(f, ["window.size=50"], {"window": {"size": 60}})
    assert s.window.size == 50


def test_set_values_are_stripped_and_converted() -> None:
    s = load_settings(
        overrides=[
            " window.size = 32 ",
            "scorer.exactly_once=true",
            "decide.high_ratio=2.5",
            "kafka.client_id=a=b",  # only the first '=' splits
        ]
    )
    assert s.window.size == 32
    assert s.scorer.exactly_once is True
    assert s.decide.high_ratio == 2.5
    assert s.kafka.client_id == "a=b"


def test_dotted_librdkafka_property_cannot_go_through_set() -> None:
    # Every '.' nests, so "kafka.extra.socket.timeout.ms" is not one key of kafka.extra.
    # Documented limitation: use the TOML file or STREAM_AE_KAFKA__EXTRA for such keys.
    assert "kafka.extra.socket" in config_error(overrides=["kafka.extra.socket.timeout.ms=1"])


def test_kafka_extra_from_env_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_AE_KAFKA__EXTRA", '{"socket.timeout.ms": "10000"}')
    assert load_settings().kafka.extra == {"socket.timeout.ms": "10000"}


def test_kafka_extra_from_toml(tmp_path: Path) -> None:
    f = write(tmp_path / "c.toml", '[kafka.extra]\n"socket.timeout.ms" = "10000"\n')
    assert load_settings(f).kafka.extra == {"socket.timeout.ms": "10000"}


# -- errors ----------------------------------------------------------------------------------


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    msg = config_error(missing)
    assert str(missing) in msg
    assert "does not exist" in msg


def test_missing_file_from_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_AE_CONFIG", "/no/such/dir/settings.toml")
    msg = config_error()
    assert "/no/such/dir/settings.toml" in msg
    assert "STREAM_AE_CONFIG" in msg  # the hint says where it came from


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    f = write(tmp_path / "broken.toml", "[window\nsize = 3\n")
    msg = config_error(f)
    assert str(f) in msg
    assert "cannot read settings file" in msg


def test_hop_above_size_names_window_and_hop() -> None:
    msg = config_error(overrides=["window.hop=999"])
    assert msg.startswith("invalid settings")
    assert "window" in msg
    assert "window.hop" in msg


def test_hop_above_size_from_file_names_the_file(tmp_path: Path) -> None:
    f = write(tmp_path / "c.toml", "[window]\nsize = 8\nhop = 9\n")
    msg = config_error(f)
    assert str(f) in msg
    assert "window.hop = 9" in msg


def test_non_integer_names_the_field_path_and_value() -> None:
    msg = config_error(overrides=["window.size=abc"])
    assert "window.size = 'abc'" in msg
    assert "integer" in msg


def test_unknown_field_and_section_are_named() -> None:
    assert "window.bogus" in config_error(overrides=["window.bogus=1"])
    assert "windw" in config_error(overrides=["windw.size=1"])


def test_bad_env_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_AE_KAFKA__CONNECT_ATTEMPTS", "0")
    msg = config_error()
    assert "kafka.connect_attempts = '0'" in msg
    assert "greater than or equal to 1" in msg


def test_one_line_per_problem() -> None:
    msg = config_error(overrides=["window.size=abc", "scorer.batch_size=0"])
    lines = msg.splitlines()
    assert lines[0].startswith("invalid settings")
    problems = lines[1:]
    assert len(problems) == 2
    assert any(p.strip().startswith("window.size") for p in problems)
    assert any(p.strip().startswith("scorer.batch_size") for p in problems)


def test_set_item_without_equals_sign() -> None:
    msg = config_error(overrides=["window.size"])
    assert "'window.size'" in msg
    assert "SECTION.FIELD=VALUE" in msg


def test_set_item_used_as_value_and_section() -> None:
    msg = config_error(overrides=["window=3", "window.size=4"])
    assert "'window' is set both as a value and a section" in msg


# -- secrets ---------------------------------------------------------------------------------


def test_secrets_never_in_repr_or_str(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = write(tmp_path / "c.toml", f'[kafka]\nsasl_password = "{SECRET}"\n')
    monkeypatch.setenv("STREAM_AE_KAFKA__SSL_KEY_PASSWORD", SECRET + "-key")
    s = load_settings(f)
    assert s.kafka.sasl_password is not None
    assert s.kafka.sasl_password.get_secret_value() == SECRET
    assert s.kafka.ssl_key_password is not None
    assert s.kafka.ssl_key_password.get_secret_value() == SECRET + "-key"
    for text in (repr(s), str(s), repr(s.kafka), s.model_dump_json()):
        assert SECRET not in text


def test_secret_not_in_error_when_another_field_is_invalid() -> None:
    msg = config_error(overrides=[f"kafka.sasl_password={SECRET}", "window.size=abc"])
    assert "window.size" in msg
    assert SECRET not in msg


def test_invalid_secret_value_is_masked(tmp_path: Path) -> None:
    f = write(tmp_path / "c.toml", "[kafka]\nsasl_password = 987654321\n")
    msg = config_error(f)
    assert "kafka.sasl_password:" in msg
    assert "987654321" not in msg


# -- librdkafka dicts (pure, no broker) ------------------------------------------------------


def test_client_config_plaintext_has_only_the_basics() -> None:
    assert client_config(KafkaSettings()) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "client.id": "stream-ae",
        "security.protocol": "PLAINTEXT",
        "logger": logging.getLogger("stream_ae.librdkafka"),
    }


def test_client_config_passes_sasl_tls_extra_and_overrides() -> None:
    kafka = KafkaSettings(
        bootstrap_servers="b:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password=SECRET,  # type: ignore[arg-type]
        ssl_ca_location="/etc/ca.pem",
        ssl_certificate_location="/etc/cert.pem",
        ssl_key_location="/etc/key.pem",
        ssl_key_password="keypw",  # type: ignore[arg-type]
        extra={"socket.timeout.ms": "10000", "client.id": "from-extra"},
    )
    conf = client_config(kafka, **{"group.id": "g", "socket.timeout.ms": "5"})
    assert conf == {
        "bootstrap.servers": "b:9093",
        "client.id": "from-extra",  # extra wins over the named fields
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "sasl.password": SECRET,  # unwrapped for librdkafka
        "ssl.ca.location": "/etc/ca.pem",
        "ssl.certificate.location": "/etc/cert.pem",
        "ssl.key.location": "/etc/key.pem",
        "ssl.key.password": "keypw",
        "socket.timeout.ms": "5",  # call-site overrides win over extra
        "group.id": "g",
        "logger": logging.getLogger("stream_ae.librdkafka"),
    }


def test_redacted_masks_every_password_and_keeps_the_rest() -> None:
    conf = {
        "bootstrap.servers": "b:1",
        "sasl.username": "svc",
        "sasl.password": SECRET,
        "ssl.key.password": "keypw",
        "ssl.keystore.password": "other",
    }
    safe = redacted(conf)
    assert safe == {
        "bootstrap.servers": "b:1",
        "sasl.username": "svc",
        "sasl.password": "***",
        "ssl.key.password": "***",
        "ssl.keystore.password": "***",
    }
    assert conf["sasl.password"] == SECRET  # a copy: the original is untouched


# -- environment variables: malformed JSON, misspelt names ------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "sets"),
    [
        ("STREAM_AE_KAFKA__EXTRA", "{bad", "it sets kafka.extra"),
        ("STREAM_AE_KAFKA", "notjson", "it sets the section kafka"),
    ],
)
def test_malformed_json_in_a_variable_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, sets: str
) -> None:
    monkeypatch.setenv(name, value)
    msg = config_error()
    assert f"environment variable {name} is not valid JSON" in msg
    assert sets in msg
    assert "settings file" not in msg and "EnvSettingsSource" not in msg


def test_malformed_json_value_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_AE_KAFKA__EXTRA", '{"sasl.password": "' + SECRET)
    msg = config_error()
    assert "STREAM_AE_KAFKA__EXTRA" in msg
    assert SECRET not in msg


def test_misspelt_variables_are_warned_about_once_with_the_likely_name(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from stream_ae import settings as settings_module

    monkeypatch.setattr(settings_module, "_warned_env", set())
    monkeypatch.setenv("STREAM_AE_KAFKA_BOOTSTRAP_SERVERS", "b:1")  # one underscore
    monkeypatch.setenv("STREAM_AE_WINDW__SIZE", "32")
    monkeypatch.setenv("STREAM_AE_NOTHING_LIKE_IT", "1")
    with caplog.at_level(logging.WARNING, logger="stream_ae.settings"):
        s = load_settings()
        load_settings()  # once per variable, not per load
    assert (s.kafka.bootstrap_servers, s.window.size) == ("127.0.0.1:9092", 64)  # ignored
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 3, warned
    assert any(
        "STREAM_AE_KAFKA_BOOTSTRAP_SERVERS" in w
        and "did you mean STREAM_AE_KAFKA__BOOTSTRAP_SERVERS" in w
        for w in warned
    )
    assert any("did you mean STREAM_AE_WINDOW__SIZE" in w for w in warned)
    assert any("STREAM_AE_NOTHING_LIKE_IT sets no setting" in w for w in warned)


def test_variables_used_outside_the_settings_tree_are_not_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from stream_ae import settings as settings_module

    monkeypatch.setattr(settings_module, "_warned_env", set())
    monkeypatch.setenv("STREAM_AE_CONFIG", str(write(tmp_path / "c.toml", "")))
    monkeypatch.setenv("STREAM_AE_SKAB_DIR", "/data/skab")
    monkeypatch.setenv("STREAM_AE_TEST_BOOTSTRAP", "127.0.0.1:9")
    monkeypatch.setenv("STREAM_AE_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("STREAM_AE_KAFKA__EXTRA__socket.timeout.ms", "5")
    monkeypatch.setenv("STREAM_AE_TOPICS", '{"readings": "r"}')
    with caplog.at_level(logging.WARNING, logger="stream_ae.settings"):
        s = load_settings()
    assert s.topics.readings == "r"
    assert not caplog.records, [r.getMessage() for r in caplog.records]


# -- kafka.extra secrets ---------------------------------------------------------------------


def test_secret_like_extra_properties_are_masked_but_reach_librdkafka() -> None:
    extra = {
        "sasl.oauthbearer.client.secret": SECRET + "-oauth",
        "ssl.key.pem": SECRET + "-pem",
        "sasl.oauthbearer.config": SECRET + "-config",
        "socket.timeout.ms": "10000",
    }
    kafka = KafkaSettings(extra=extra)
    s = load_settings(flags={"kafka": {"extra": extra}})
    for text in (repr(kafka), str(kafka), kafka.model_dump_json(), repr(s), s.model_dump_json()):
        assert SECRET not in text
        assert "10000" in text  # the rest stays readable
    safe = redacted(client_config(kafka))
    assert SECRET not in str(safe)
    assert safe["socket.timeout.ms"] == "10000"
    assert client_config(kafka)["ssl.key.pem"] == SECRET + "-pem"  # unmasked for librdkafka
    assert kafka.model_dump()["extra"] == extra  # Python dumps (the --via-kafka child) too


# -- librdkafka refusing a client's settings (no broker: refused when created) ---------------


def kafka_config_error(make: Any, **fields: Any) -> str:
    with pytest.raises(ConfigError) as info:
        make(KafkaSettings(bootstrap_servers="127.0.0.1:9", **fields))
    return str(info.value)


CLIENTS: dict[str, Any] = {
    "admin": Admin,
    "producer": OutputProducer,
    "consumer": lambda k: InputConsumer(k, "t", "g"),
    "reader": lambda k: list(read_range(k, "t")),
}


@pytest.mark.parametrize("client", list(CLIENTS))
def test_unsupported_sasl_mechanism_names_the_setting(client: str) -> None:
    msg = kafka_config_error(
        CLIENTS[client], security_protocol="SASL_PLAINTEXT", sasl_mechanism="FOO"
    )
    assert "kafka.sasl_mechanism (STREAM_AE_KAFKA__SASL_MECHANISM)" in msg
    assert "Unsupported SASL mechanism: FOO" in msg


def test_unknown_extra_property_names_kafka_extra() -> None:
    msg = kafka_config_error(CLIENTS["producer"], extra={"foo.bar": "1"})
    assert 'kafka.extra["foo.bar"] (STREAM_AE_KAFKA__EXTRA)' in msg
    assert "No such configuration property" in msg


def test_missing_certificate_file_names_the_setting_and_the_file() -> None:
    msg = kafka_config_error(
        CLIENTS["admin"], security_protocol="SSL", ssl_ca_location="/no/such/ca.pem"
    )
    assert "kafka.ssl_ca_location (STREAM_AE_KAFKA__SSL_CA_LOCATION)" in msg
    assert "the file /no/such/ca.pem does not exist" in msg


def test_refused_client_settings_never_show_a_secret() -> None:
    msg = kafka_config_error(
        CLIENTS["consumer"],
        security_protocol="SSL",
        extra={"ssl.key.pem": SECRET, "ssl.key.password": SECRET},
    )
    assert 'kafka.extra["ssl.key.pem"]' in msg
    assert SECRET not in msg
