"""``topics create``, ``train``, ``score``: thin wrappers over the library."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from stream_ae.errors import DataError
from stream_ae.settings import Settings

console = Console()
log = logging.getLogger("stream_ae.cli")


class KafkaSink:
    """``MessageSink`` for the simulator: a plain producer to one topic."""

    def __init__(self, settings: Settings, topic: str) -> None:
        from stream_ae.io.kafka import OutputProducer

        self.topic = topic
        self._producer = OutputProducer(settings.kafka)

    def send(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        self._producer.send(self.topic, value, key=key, timestamp_ms=timestamp_ms)

    def flush(self) -> None:
        self._producer.flush()


def kafka_sink(topic: str) -> KafkaSink:
    from stream_ae.cli import get_settings

    settings = get_settings()
    ensure_topics(settings, [topic or settings.topics.readings])
    return KafkaSink(settings, topic or settings.topics.readings)


def ensure_topics(settings: Settings, extra: list[str] | None = None) -> list[str]:
    from stream_ae.io.kafka import Admin
    from stream_ae.service import output_topics

    admin = Admin(settings.kafka)
    admin.wait_until_reachable()
    topics = [settings.topics.readings, *output_topics(settings), *(extra or [])]
    return admin.ensure_topics(
        topics,
        partitions=settings.topics.partitions,
        replication_factor=settings.topics.replication_factor,
    )


def register(app: typer.Typer) -> None:
    from stream_ae.cli import get_settings

    topics_app = typer.Typer(help="Manage stream_ae's topics.", no_args_is_help=True)
    app.add_typer(topics_app, name="topics")

    @topics_app.command("create")
    def topics_create(
        partitions: Annotated[
            int | None, typer.Option("--partitions", min=1, help="Partitions per new topic.")
        ] = None,
    ) -> None:
        """Create the readings, dead-letter, anomalies, data-quality (and scores) topics."""
        settings = get_settings({"topics": {"partitions": partitions}})
        created = ensure_topics(settings)
        t = settings.topics
        for name in [t.readings, t.dead_letter_topic, t.anomalies, t.data_quality]:
            state = "created" if name in created else "exists"
            console.print(f"{name:40s} {state}")

    @app.command()
    def train(
        csv: Annotated[
            Path | None,
            typer.Option(
                "--csv",
                "--input",
                help="Normal readings to train on: a CSV or Parquet file, or a folder of them.",
            ),
        ] = None,
        topic_start: Annotated[
            str | None,
            typer.Option("--from", help="Train on the readings topic from this time (ISO-8601)."),
        ] = None,
        topic_end: Annotated[
            str | None, typer.Option("--to", help="... up to this time (default: now).")
        ] = None,
        channels: Annotated[
            str | None,
            typer.Option("--channels", help="Comma-separated channels (default: from the data)."),
        ] = None,
        sep: Annotated[str, typer.Option("--sep", help="CSV separator.")] = ",",
        time_column: Annotated[
            str | None,
            typer.Option("--time-column", help="CSV time column (default: timestamp/datetime/…)."),
        ] = None,
        architecture: Annotated[
            str | None, typer.Option("--architecture", help="conv or lstm.")
        ] = None,
        epochs: Annotated[int | None, typer.Option("--epochs", min=1)] = None,
        variant: Annotated[
            str | None,
            typer.Option("--variant", help="plain, denoising, sparse, contractive or variational."),
        ] = None,
        out: Annotated[
            Path | None, typer.Option("--out", help="Folder for the artifact versions.")
        ] = None,
    ) -> None:
        """Fit an autoencoder on normal data and write a versioned artifact."""
        from stream_ae.training import train as run_training

        settings = get_settings(
            {
                "train": {
                    "architecture": architecture,
                    "epochs": epochs,
                    "output_dir": out,
                    "variant": variant,
                }
            }
        )
        chans = [c.strip() for c in channels.split(",")] if channels else None
        if (csv is None) == (topic_start is None):
            raise DataError("give exactly one source: --csv FILE or --from TIME [--to TIME]")
        if csv is not None:
            from stream_ae.readings_io import read_readings

            readings = read_readings(csv, channels=chans, sep=sep, time_column=time_column)
            source = str(csv)
        else:
            from stream_ae.readings_io import read_topic

            readings, source = read_topic(settings, topic_start or "", topic_end, chans)
        console.print(
            f"training a [bold]{settings.train.architecture}[/] autoencoder on "
            f"{len(readings):,} readings from {source} ({len(readings.channels)} channels)"
        )

        def progress(epoch: int, train_loss: float, val_loss: float) -> None:
            console.print(f"  epoch {epoch:3d}  train {train_loss:.4f}  held-out {val_loss:.4f}")

        path, info = run_training(readings, settings, source=source, progress=progress)
        console.print(f"[green]saved[/] {path}")
        console.print_json(json.dumps(info, default=str))

    @app.command()
    def embed(
        csv: Annotated[
            Path,
            typer.Option("--csv", "--input", help="CSV or Parquet file (or a folder of them)."),
        ],
        model: Annotated[Path, typer.Option("--model", help="Artifact folder.")],
        out: Annotated[
            Path | None, typer.Option("--out", help="JSON-lines file (default: stdout).")
        ] = None,
        sep: Annotated[str, typer.Option("--sep")] = ",",
    ) -> None:
        """Each window's latent vector (the encoder's output), one JSON line per window."""
        import sys

        from stream_ae import schemas
        from stream_ae.cli.outputs import open_output
        from stream_ae.model.artifact import load_artifact
        from stream_ae.model.latents import latents
        from stream_ae.readings_io import read_readings, to_windows
        from stream_ae.service import model_grid

        settings = get_settings()
        loaded = load_artifact(model, device=settings.model.device)
        md = loaded.metadata
        readings = read_readings(csv, channels=md.channels, sep=sep)
        spec = model_grid(md, settings)
        windows = to_windows(readings, spec)
        vectors = latents(loaded.scorer, windows.values)
        sink = open_output("--out", out, lambda p: p.open("wb")) if out else sys.stdout.buffer
        try:
            for record in schemas.latent_records(
                windows.asset_ids,
                windows.start_ms.tolist(),
                windows.end_ms.tolist(),
                vectors.tolist(),
                md.version,
            ):
                sink.write(schemas.encode(record) + b"\n")
        finally:
            if out:
                sink.close()
        if out:
            console.print(
                f"{len(windows):,} windows → {vectors.shape[1]}-dimensional latent vectors in {out}"
            )

    @app.command()
    def score(
        model: Annotated[
            Path | None, typer.Option("--model", help="Artifact folder (default model.path).")
        ] = None,
        exactly_once: Annotated[
            bool | None,
            typer.Option("--exactly-once/--at-least-once", help="Kafka transactions or not."),
        ] = None,
        group_id: Annotated[str | None, typer.Option("--group-id")] = None,
        max_idle: Annotated[
            float | None,
            typer.Option("--max-idle", help="Exit after this many seconds without messages."),
        ] = None,
    ) -> None:
        """Run the streaming scorer until SIGTERM/SIGINT (then flush, commit, exit 0)."""
        from stream_ae.service import ScorerService, bind_model, load_model

        settings = get_settings(
            {
                "model": {"path": model},
                "scorer": {"exactly_once": exactly_once, "group_id": group_id},
            }
        )
        loaded = load_model(settings)
        log.info(
            "model %s (%s, channels %s, W=%d, H=%d, threshold %.4g) from %s",
            loaded.metadata.version,
            loaded.metadata.architecture,
            ",".join(loaded.metadata.channels),
            loaded.metadata.window,
            loaded.metadata.hop,
            loaded.metadata.threshold_spec.value,
            loaded.path,
        )
        service = ScorerService(settings, bind_model(loaded, settings))
        service.install_signal_handlers()
        summary = service.run(max_idle_s=max_idle)
        console.print_json(json.dumps(summary.metrics, default=str))
