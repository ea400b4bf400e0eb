"""``stream-ae``: the command line. Reads the settings tree once and passes it down.

Every :class:`~stream_ae.errors.StreamAEError` becomes a one-line message on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from stream_ae.errors import StreamAEError
from stream_ae.settings import Settings, load_settings

app = typer.Typer(
    name="stream-ae",
    help="Streaming anomaly detection for predictive maintenance on Apache Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

err_console = Console(stderr=True)


class _State:
    """What the top-level options said; commands build settings from it."""

    config: Path | None = None
    overrides: tuple[str, ...] = ()
    log_level: str | None = None


def get_settings(flags: dict[str, Any] | None = None) -> Settings:
    """The settings tree; ``flags`` are a command's own options (highest precedence)."""
    merged = dict(flags or {})
    if _State.log_level:
        merged["log_level"] = _State.log_level
    settings = load_settings(_State.config, list(_State.overrides), merged)
    _setup_logging(settings.log_level)
    return settings


def _setup_logging(level: str) -> None:
    root = logging.getLogger()
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        handler = RichHandler(console=err_console, show_path=False, rich_tracebacks=False)
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("stream_ae").setLevel(level)


@app.callback()
def _main(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML settings file (default config/stream_ae.toml)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a setting: SECTION.FIELD=VALUE (repeatable)."),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")
    ] = None,
) -> None:
    _State.config = config
    _State.overrides = tuple(set_ or ())
    _State.log_level = log_level.upper() if log_level else None


def _register() -> None:
    from stream_ae.cli import (
        commands,
        demo_cmd,
        evaluate_cmd,
        export_cmd,
        kafka_cmd,
        models_cmd,
        retrain_cmd,
        simulate_cmd,
    )
    from stream_ae.io.local_broker import BrokerConfig

    def broker_config() -> BrokerConfig:
        lb = get_settings().local_broker
        return BrokerConfig(
            kafka_version=lb.kafka_version,
            cache_dir=lb.cache_dir,
            state_dir=lb.state_dir,
            port=lb.port,
            controller_port=lb.controller_port,
            heap=lb.heap,
            sasl_port=lb.sasl_port,
            sasl_users={name: pw.get_secret_value() for name, pw in lb.sasl_users.items()},
        )

    app.add_typer(kafka_cmd.make_kafka_app(broker_config), name="kafka")
    simulate_cmd.register(app, commands.kafka_sink)
    commands.register(app)
    demo_cmd.register(app, broker_config)
    evaluate_cmd.register(app)
    export_cmd.register(app)
    models_cmd.register(app)
    retrain_cmd.register(app)
    retrain_cmd.register_trainer(app)


_register()


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (errors become one line and code 2)."""
    try:
        app(args=argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except StreamAEError as exc:
        # escaped: a message's own brackets ("[kafka]", "[topic=t, partition=0]") are
        # text, not rich markup that would be dropped
        err_console.print(
            f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def main() -> None:
    sys.exit(run())


def console_main() -> None:
    """The ``stream-ae`` console script: :func:`main`, then a quiet exit.

    Creating a torch optimiser imports triton, whose native bindings print a page
    of "nanobind: leaked ..." lines at interpreter teardown. Everything of ours is
    flushed and closed when the command returns, so the console script leaves
    without that teardown. (Only here: in-process callers keep a normal exit.)
    """
    code = run()
    if "triton" in sys.modules:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
