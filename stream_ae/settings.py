"""The one settings tree.

Precedence, highest first: CLI flags (``--set section.field=value`` and the
command's own options) > environment variables (``STREAM_AE_<SECTION>__<FIELD>``)
> the TOML settings file (``config/stream_ae.toml`` or ``--config``/
``STREAM_AE_CONFIG``) > defaults in code.

It is read once at the entry point (:func:`load_settings`) and passed down as
typed objects; nothing below the CLI reads ``os.environ``. Secrets are
``SecretStr`` so they never show in logs or ``repr``.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from stream_ae.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_CONFIG_FILE = Path("config/stream_ae.toml")
ENV_PREFIX = "STREAM_AE_"
#: ``STREAM_AE_*`` variables that are read outside the settings tree (never warned
#: about as misspelt settings): the settings file (:func:`load_settings`), the SKAB
#: folder (tests/conftest.py) and the test broker (tests/integration/conftest.py)
NOT_SETTINGS = {"STREAM_AE_CONFIG", "STREAM_AE_SKAB_DIR", "STREAM_AE_TEST_BOOTSTRAP"}

#: words that make a (librdkafka) property a secret, e.g. sasl.oauthbearer.client.secret,
#: ssl.key.pem, ssl.keystore.password; and properties that may embed one
_SECRET_WORDS = ("secret", "password", "pem", "token")
_SECRET_PROPERTIES = {"sasl.oauthbearer.config", "sasl.jaas.config"}
MASK = "**********"


def is_secret_property(name: str) -> bool:
    """True for a property (or settings field path) whose value must never be shown."""
    low = name.lower()
    return low in _SECRET_PROPERTIES or any(word in low for word in _SECRET_WORDS)


def masked(props: dict[str, str]) -> dict[str, str]:
    """``props`` with the values of secret-like keys replaced by a mask."""
    return {k: (MASK if is_secret_property(k) else v) for k, v in props.items()}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class KafkaSettings(_Section):
    """Connection to the cluster. SASL/TLS fields pass straight to librdkafka."""

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "stream-ae"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    #: Any other librdkafka property, passed through as is,
    #: e.g. ``{"socket.timeout.ms": "10000"}``.
    extra: dict[str, str] = Field(default_factory=dict)
    connect_attempts: int = Field(default=10, ge=1)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """``extra`` may hold secrets (``sasl.oauthbearer.client.secret``,
        ``ssl.key.pem``): plain strings, not ``SecretStr``, as librdkafka takes any
        property there. ``repr`` and ``str`` mask them as they mask the named secrets."""
        for name, value in super().__repr_args__():
            yield name, masked(value) if name == "extra" else value

    @field_serializer("extra", when_used="json")
    def _mask_extra(self, extra: dict[str, str]) -> dict[str, str]:
        """JSON dumps mask ``extra``'s secrets, as they mask ``SecretStr`` fields; a
        Python dump keeps them (the --via-kafka scorer child is configured from one)."""
        return masked(extra)


class TopicSettings(_Section):
    readings: str = "sensors.readings"
    #: Dead-letter topic; empty means ``<readings>.dlq``.
    dead_letter: str = ""
    anomalies: str = "maintenance.anomalies"
    scores: str = "stream_ae.scores"
    publish_scores: bool = False
    #: each scored window's latent vector (the encoder's output), off by default
    latents: str = "stream_ae.latents"
    publish_latents: bool = False
    data_quality: str = "stream_ae.data_quality"
    #: Compacted control topic announcing the champion model (hot swap).
    models: str = "stream_ae.models"
    #: Maintenance teams' feedback (schemas.FeedbackEvent), read by the trainer, and
    #: by the scorer when decide.tag_maintenance is on or model.rebaseline_s > 0.
    feedback: str = "maintenance.feedback"
    #: Used by ``topics create`` for topics that do not exist yet.
    partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=1, ge=1)

    @property
    def dead_letter_topic(self) -> str:
        return self.dead_letter or f"{self.readings}.dlq"


class WindowSettings(_Section):
    """Event-time grid and sliding windows (see ``stream_ae.windowing``)."""

    sample_period_ms: int = Field(default=1000, gt=0)
    #: W: samples per window.
    size: int = Field(default=64, ge=4)
    #: H: samples between the starts of consecutive windows.
    hop: int = Field(default=16, ge=1)
    #: A reading may arrive this long after the newest reading of its asset.
    allowed_lateness_ms: int = Field(default=5000, ge=0)
    #: Readings stamped further than this ahead of the wall clock are dead letters.
    max_future_ms: int = Field(default=300_000, ge=0)
    #: A missing sample is filled forward for at most this many grid steps.
    fill_limit: int = Field(default=3, ge=0)
    #: An asset silent this long (wall clock) is reported and its open windows closed.
    idle_timeout_ms: int = Field(default=600_000, gt=0)
    #: A gap (a channel missing beyond fill_limit) still open this long (event time,
    #: rounded up to grid steps) is reported while it lasts, naming the missing channels:
    #: the asset is not scored meanwhile. Unset (None) = one window of the model
    #: (W x its sample period); 0 = off.
    gap_alert_ms: int | None = Field(default=None, ge=0)

    @field_validator("hop")
    @classmethod
    def _hop_not_above_size(cls, hop: int, info: ValidationInfo) -> int:
        size = info.data.get("size")
        if size is not None and hop > size:
            raise ValueError(
                f"must not exceed window.size ({size}): readings between windows would "
                "never be scored"
            )
        return hop


class ModelSettings(_Section):
    #: Artifact version folder, a folder of versions (the newest is used), or a model
    #: registry (trainer.registry, or its versions/ folder: its champion is used).
    path: Path = Path("artifacts")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: torch intra-op threads. 1 by default: the scorer's own Python loop and
    #: librdkafka need the other cores (more threads made a busy 2-core box 2x slower,
    #: docs/benchmarks.md). Unset (None) = torch's default.
    threads: int | None = Field(default=1, ge=1)
    max_batch: int = Field(default=1024, ge=1)
    load_attempts: int = Field(default=5, ge=1)
    #: torch (eager) | torchscript | onnxruntime: the exported model beside the
    #: artifact (`stream-ae export`), verified against eager torch when loaded
    runtime: Literal["torch", "torchscript", "onnxruntime"] = "torch"
    #: float16 only on CUDA (checked against float32 within a stated tolerance)
    precision: Literal["float32", "float16"] = "float32"
    #: Follow the champion announced on topics.models and switch without a restart.
    hot_swap: bool = True
    #: Warm-up re-baselining: after an asset (re)starts, a gap, or the end of its
    #: maintenance (reported on topics.feedback, which the scorer then follows), its
    #: first this-many seconds set its own normal level (not scored); 0 = off.
    #: See windowing/rebaseline.py and the README.
    rebaseline_s: float = Field(default=0.0, ge=0)


class DecideSettings(_Section):
    """Turning scores into events (severity = score / threshold bands)."""

    high_ratio: float = Field(default=2.0, gt=1.0)
    critical_ratio: float = Field(default=4.0, gt=1.0)
    top_channels: int = Field(default=3, ge=1)
    #: alarm when k of an asset's last n windows are above the threshold (1/1 = off).
    #: Recorded in the model at training; a model's own values win when scoring.
    persistence_k: int = Field(default=1, ge=1)
    persistence_n: int = Field(default=1, ge=1)
    #: Tag anomaly events whose window overlaps a maintenance period reported on
    #: topics.feedback (maintenance_start … maintenance_end, or one maintenance
    #: record; an open one tags until its end comes) with during_maintenance = true.
    #: They are still published, same severity and id: consumers filter on the tag.
    #: The scorer then follows topics.feedback (created if missing); off: never tagged.
    tag_maintenance: bool = True
    #: An open maintenance (a start, no end yet) tags for at most this many hours
    #: after its start (event time); then the scorer warns once and tags no more, so
    #: a forgotten maintenance_end does not hide the asset's real alarms from a
    #: consumer that filters on the tag. 0 = no limit.
    maintenance_open_max_h: float = Field(default=24.0, ge=0)


class ScorerSettings(_Section):
    group_id: str = "stream-ae-scorer"
    batch_size: int = Field(default=50_000, ge=1)
    poll_timeout_s: float = Field(default=0.5, gt=0)
    commit_interval_s: float = Field(default=2.0, gt=0)
    #: Events and offsets commit atomically in Kafka transactions.
    exactly_once: bool = False
    #: At-least-once mode: at each commit, after the outputs are acknowledged, also
    #: write each asset's last published window to the compacted marks topic
    #: (``<group_id>.emitted``, as exactly-once mode does in its transaction). A restart
    #: then skips those windows instead of rebuilding them from the part of their
    #: readings after the committed offset, which can differ (out-of-order data).
    #: Windows published after the last commit still come again, with equal values.
    replay_marks: bool = True
    transactional_id: str = "stream-ae-scorer"
    stats_interval_s: float = Field(default=10.0, gt=0)


class TrainSettings(_Section):
    architecture: Literal["conv", "lstm"] = "conv"
    #: plain | denoising | sparse | contractive | variational (model/variants.py)
    variant: Literal["plain", "denoising", "sparse", "contractive", "variational"] = "plain"
    #: the variant's parameters (e.g. {"beta": 0.1}); unset ones take their defaults
    variant_params: dict[str, float | str] = Field(default_factory=dict)
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=128, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)
    threshold_quantile: float = Field(default=0.995, gt=0, lt=1)
    #: "none": the score is the mean squared error over channels and time;
    #: "holdout": each channel's error is first divided by its mean on held-out
    #: normal windows, so no channel dominates just by being hard to reconstruct
    #: (stored in the artifact's scaler; docs/evaluation.md has the SKAB numbers).
    error_norm: Literal["none", "holdout"] = "none"
    #: Score a window by the error of its newest this-many time steps (the model
    #: still sees the whole window); 0 = the whole window. The live rule gives each
    #: reading the verdict of the window ending at it, so a tail makes that verdict
    #: describe the newest readings: anomalies are flagged sooner and stop being
    #: flagged sooner. At most window.size; stored in the artifact.
    score_tail: int = Field(default=0, ge=0)
    seed: int = 0
    hparams: dict[str, float] = Field(default_factory=dict)
    output_dir: Path = Path("artifacts")


class TrainerSettings(_Section):
    """The retraining service (``stream-ae trainer run``; trainers/)."""

    registry: Path = Path("registry")
    #: Refit every this many seconds (and whenever `stream-ae trainer trigger` asks).
    interval_s: float = Field(default=86_400.0, gt=0)
    #: Train on the readings of this many seconds before now.
    lookback_s: float = Field(default=3 * 86_400.0, gt=0)
    #: Channels to train on; empty = the champion's.
    channels: list[str] = Field(default_factory=list)
    threshold_method: Literal["quantile", "pot"] = "quantile"
    #: Target false alarms per window for calibration and the promotion gate.
    far_target: float = Field(default=0.005, gt=0, lt=1)
    far_factor: float = Field(default=2.0, gt=0)
    #: Alarm budget in false alarms per asset per day instead: when set, it replaces
    #: far_target, converted with the window hop (hop x sample period) — e.g. 0.1 =
    #: one exceeding window per asset every 10 days.
    far_per_day: float | None = Field(default=None, gt=0)
    #: Give each asset with enough calibration windows its own threshold (same
    #: method); the others keep the fleet threshold. Off by default: a tail
    #: quantile from one asset's few hundred windows is noisy, and the pooled
    #: fleet threshold is the better estimate unless assets really differ.
    per_asset_thresholds: bool = False
    #: Calibration windows an asset needs for its own threshold. 1000 x the
    #: default far_target 0.005 = 5 expected exceedances, so the quantile is not
    #: just the largest score (its rate still scatters ~1/sqrt(5) = 45%) and POT
    #: fits ~100 excesses (tail_fraction 0.1). Raise it for a smaller far_target.
    per_asset_min_windows: int = Field(default=1000, ge=10)
    #: Refuse to train when more than this share of windows must be excluded.
    max_excluded_share: float = Field(default=0.5, gt=0, le=1)
    promote: bool = True
    #: Retention: after each round keep this many newest registry versions (0 = all);
    #: the champion and every version rollback can return to are never deleted.
    keep_versions: int = Field(default=20, ge=0)
    #: Golden set for the promotion gate: a labelled CSV (``anomaly`` column), a
    #: folder of them, or ``sim:SEED[,assets=N][,duration=DUR]``; empty = none.
    golden_set: str = ""
    #: Gate: candidate's event recall on the golden set >= champion's - this.
    golden_tolerance: float = Field(default=0.05, ge=0, le=1)
    #: ... and its false-alarm rate on the golden set's normal readings <= the
    #: champion's + this many percentage points (else an always-alarming candidate
    #: would pass on recall alone).
    golden_far_tolerance: float = Field(default=5.0, ge=0, le=100)
    #: Every this many seconds, score the last ``drift_lookback_s`` of readings with
    #: the champion and log its drift (``drift_score``: 1.0 = the drift monitor's own
    #: limits, inputs 3 training σ away or the median score doubled); 0 = no checks.
    drift_check_s: float = Field(default=3600.0, ge=0)
    drift_lookback_s: float = Field(default=3600.0, gt=0)
    #: Refit when the drift score reaches ``drift_refit_threshold``. Off by default:
    #: drift can be the fault itself (a wearing bearing raises vibration for weeks),
    #: and a refit on it teaches the model that the fault is normal. The round still
    #: excludes the champion's alarms and must pass the gate, but a slow fault stays
    #: under the champion's threshold while it shifts the inputs. Turn it on where
    #: drift is known to be benign (seasons, recalibrated sensors, a new set point).
    drift_refit: bool = False
    drift_refit_threshold: float = Field(default=1.0, gt=0)
    #: At least this long between two drift-triggered rounds.
    drift_refit_min_interval_s: float = Field(default=21_600.0, ge=0)


class LocalBrokerSettings(_Section):
    """The broker ``stream-ae kafka up`` runs for demos and tests."""

    kafka_version: str = "4.1.1"
    cache_dir: Path = Path.home() / ".cache" / "stream_ae" / "kafka"
    state_dir: Path = Path.home() / ".local" / "state" / "stream_ae" / "broker"
    port: int = Field(default=9092, ge=1, le=65535)
    controller_port: int = Field(default=9093, ge=1, le=65535)
    heap: str = "512m"
    #: an extra SASL_PLAINTEXT client listener (mechanism PLAIN) on this port; None: none
    sasl_port: int | None = Field(default=None, ge=1, le=65535)
    #: the users it accepts, name -> password, e.g. ``{ alice = "alice-secret" }``
    sasl_users: dict[str, SecretStr] = Field(default_factory=dict)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STREAM_AE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    window: WindowSettings = Field(default_factory=WindowSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    decide: DecideSettings = Field(default_factory=DecideSettings)
    scorer: ScorerSettings = Field(default_factory=ScorerSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)
    local_broker: LocalBrokerSettings = Field(default_factory=LocalBrokerSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # toml_file is set per load by load_settings() on a subclass's model_config.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def _parse_override(item: str) -> tuple[list[str], str]:
    if "=" not in item:
        raise ConfigError(
            f"--set {item!r}: expected SECTION.FIELD=VALUE",
            hint="for example --set window.size=32",
        )
    key, value = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"--set {item!r}: empty field name")
    return path, value.strip()


def _nest(overrides: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in overrides or []:
        path, value = _parse_override(item)
        node = out
        for p in path[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {p!r} is set both as a value and a section")
        node[path[-1]] = value
    return out


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = _merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def format_validation_error(exc: ValidationError, *, source: str = "settings") -> str:
    """One line per problem: ``window.hop = 100: hop (100) must not exceed size (64)``."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(root)"
        given = err.get("input")
        shown = "" if isinstance(given, dict) or given is None else f" = {given!r}"
        if err["type"] == "extra_forbidden" or is_secret_property(field):
            shown = ""  # never echo what may be a secret typed into the wrong field
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {field}{shown}: {msg}")
    return f"invalid {source}:\n" + "\n".join(lines)


def load_settings(
    config_file: Path | None = None,
    overrides: list[str] | None = None,
    flags: dict[str, Any] | None = None,
) -> Settings:
    """Build the settings tree from every source, or raise :class:`ConfigError`.

    ``config_file``: explicit file (must exist); otherwise ``STREAM_AE_CONFIG`` or
    ``config/stream_ae.toml`` when present. ``overrides``: ``--set`` items.
    ``flags``: nested dict from a command's own options (``None`` values ignored).
    """
    env_path = os.environ.get("STREAM_AE_CONFIG")
    path = config_file or (Path(env_path) if env_path else None)
    if path is not None and not path.is_file():
        raise ConfigError(
            f"settings file {path} does not exist",
            hint="pass an existing TOML file with --config, or unset STREAM_AE_CONFIG",
        )
    if path is None and DEFAULT_CONFIG_FILE.is_file():
        path = DEFAULT_CONFIG_FILE
    init = _merge(_drop_none(flags or {}), _nest(overrides))
    _warn_unknown_env(os.environ)
    bound = type(
        "Settings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": path}}
    )
    try:
        settings: Settings = bound(**init)
        return settings
    except ValidationError as exc:
        where = f"settings (file {path}, STREAM_AE_* variables, flags)" if path else "settings"
        raise ConfigError(format_validation_error(exc, source=where)) from None
    except ValueError as exc:  # e.g. malformed TOML, or JSON in a variable
        if isinstance(exc, SettingsError) and "EnvSettingsSource" in str(exc):
            raise _env_json_error(exc, os.environ) from None
        raise ConfigError(f"cannot read settings file {path}: {exc}") from None


def _is_complex(annotation: Any) -> bool:
    """Whether pydantic-settings reads an environment variable for a field of this
    type as JSON (a section, a mapping, a list)."""
    args = get_args(annotation)
    if args and type(None) in args:  # X | None
        return any(_is_complex(a) for a in args if a is not type(None))
    origin = get_origin(annotation) or annotation
    return isinstance(origin, type) and issubclass(origin, BaseModel | dict | list)


def _env_field(name: str) -> tuple[str, Any] | None:
    """``STREAM_AE_KAFKA__EXTRA`` -> (``kafka.extra``, its type); None if no setting."""
    parts = name.upper().removeprefix(ENV_PREFIX).split("__")
    model: Any = Settings
    path: list[str] = []
    annotation: Any = None
    for part in parts:
        fields = getattr(model, "model_fields", None)
        if not fields or part.lower() not in fields:
            return (".".join(path), None) if path else None  # a key below a field
        path.append(part.lower())
        annotation = fields[part.lower()].annotation
        model = annotation
    return ".".join(path), annotation


def _env_json_error(exc: SettingsError, environ: Mapping[str, str]) -> ConfigError:
    """pydantic-settings says only 'error parsing value for field "kafka" from source
    "EnvSettingsSource"': name the variable that is not valid JSON, and what it sets
    (its value is not shown: it may hold a secret)."""
    for name, value in sorted(environ.items()):
        if not name.upper().startswith(ENV_PREFIX) or name.upper() in NOT_SETTINGS:
            continue
        found = _env_field(name)
        if found is None or not _is_complex(found[1]):
            continue
        try:
            json.loads(value)
        except ValueError as bad:
            field = found[0]
            if "." not in field:  # the whole section
                what, hint = (
                    f"the section {field}",
                    f"to set one field use {name.upper()}__<FIELD>=value; {name} itself "
                    "takes the section as a JSON object",
                )
            else:
                example = ' (e.g. {"socket.timeout.ms": "10000"})' if field == "kafka.extra" else ""
                what, hint = field, f"write {name} as JSON{example}, or unset it"
            return ConfigError(
                f"environment variable {name} is not valid JSON ({bad}); it sets {what}",
                hint=hint,
            )
    return ConfigError(f"cannot read the {ENV_PREFIX}* environment variables: {exc}")


_warned_env: set[str] = set()


def _warn_unknown_env(environ: Mapping[str, str]) -> None:
    """Warn (once per variable and process) about each ``STREAM_AE_*`` variable that
    sets nothing: pydantic-settings ignores a name that matches no section, so a
    typo (``STREAM_AE_KAFKA_BOOTSTRAP_SERVERS``, one underscore) would silently
    leave the default in place. A wrong field in a known section is already an
    error ("Extra inputs are not permitted")."""
    known = [
        f"{ENV_PREFIX}{top.upper()}" + (f"__{sub.upper()}" if sub else "")
        for top, info in Settings.model_fields.items()
        for sub in [None, *getattr(info.annotation, "model_fields", {})]
    ]
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in NOT_SETTINGS or name in _warned_env:
            continue
        if _env_field(name) is not None:
            continue
        _warned_env.add(name)
        close = difflib.get_close_matches(upper, [*known, *NOT_SETTINGS], n=1, cutoff=0.8)
        advice = (
            f"did you mean {close[0]}?"
            if close
            else f"settings are {ENV_PREFIX}<SECTION>__<FIELD>, e.g. {ENV_PREFIX}WINDOW__SIZE"
        )
        log.warning("environment variable %s sets no setting and is ignored: %s", name, advice)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            sub = _drop_none(v)
            if sub:
                out[k] = sub
        elif v is not None:
            out[k] = v
    return out
