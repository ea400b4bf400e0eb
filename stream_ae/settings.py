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

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from stream_ae.errors import ConfigError

DEFAULT_CONFIG_FILE = Path("config/stream_ae.toml")


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
    #: Artifact version folder, or a folder of versions (the newest is used).
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
        if err["type"] == "extra_forbidden" or any(
            word in field for word in ("password", "secret", "token")
        ):
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
    bound = type(
        "Settings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": path}}
    )
    try:
        settings: Settings = bound(**init)
        return settings
    except ValidationError as exc:
        where = f"settings (file {path}, STREAM_AE_* variables, flags)" if path else "settings"
        raise ConfigError(format_validation_error(exc, source=where)) from None
    except ValueError as exc:  # e.g. malformed TOML
        raise ConfigError(f"cannot read settings file {path}: {exc}") from None


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
