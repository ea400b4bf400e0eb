"""``stream-ae kafka up|down|status``: the local Apache Kafka broker (KRaft, one node).

Errors (:class:`stream_ae.errors.BrokerError`) propagate to the main CLI, which prints them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console

from stream_ae.io import local_broker
from stream_ae.io.local_broker import BrokerConfig, BrokerInfo


def _describe(info: BrokerInfo) -> str:
    sasl = "" if info.sasl_bootstrap is None else f"sasl:      {info.sasl_bootstrap} (PLAIN)\n"
    return (
        f"bootstrap: {info.bootstrap}\n"
        f"{sasl}"
        f"pid:       {info.pid}\n"
        f"log:       {info.log_path}\n"
        f"state dir: {info.state_dir}\n"
        f"kafka:     {info.kafka_version}"
    )


def make_kafka_app(get_config: Callable[[], BrokerConfig]) -> typer.Typer:
    """The ``kafka`` sub-app; ``get_config`` is called when a command runs."""
    app = typer.Typer(
        name="kafka",
        help="Run the local Apache Kafka broker (KRaft, one node on 127.0.0.1).",
        no_args_is_help=True,
    )

    @app.command()
    def up(
        timeout: Annotated[
            float, typer.Option("--timeout", help="Seconds to wait for the broker to answer.")
        ] = 90.0,
    ) -> None:
        """Start the broker (download Kafka the first time) and wait until it serves."""
        cfg = get_config()
        console = Console(stderr=True, log_path=False)
        with console.status(f"starting Kafka {cfg.kafka_version} ...") as spinner:

            def progress(message: str) -> None:
                console.log(message)
                spinner.update(message)

            info = local_broker.start(cfg, timeout_s=timeout, progress=progress)
        typer.echo(_describe(info))

    @app.command()
    def down(
        wipe: Annotated[
            bool,
            typer.Option("--wipe", help="Also delete the broker's data (topics, offsets)."),
        ] = False,
        timeout: Annotated[
            float, typer.Option("--timeout", help="Seconds to wait before SIGKILL.")
        ] = 30.0,
    ) -> None:
        """Stop the broker (SIGTERM, SIGKILL after --timeout)."""
        cfg = get_config()
        running = local_broker.status(cfg)
        stopped = local_broker.stop(cfg, timeout_s=timeout, wipe=wipe)
        if stopped and running is not None:
            typer.echo(f"stopped the Kafka broker (pid {running.pid}, {running.bootstrap})")
        else:
            typer.echo(f"no local Kafka broker was running (state dir: {cfg.state_dir})")
        if wipe:
            typer.echo(f"deleted its data: {cfg.data_dir}")

    @app.command("status")
    def status_cmd() -> None:
        """Show the running broker; exit code 0 when it runs, 1 when it does not."""
        cfg = get_config()
        info = local_broker.status(cfg)
        if info is None:
            typer.echo(f"not running (state dir: {cfg.state_dir})")
            raise typer.Exit(code=1)
        serving = local_broker.ping(info.bootstrap, timeout_s=2.0)
        typer.echo(_describe(info))
        typer.echo(f"serving:   {'yes' if serving else 'not yet (starting, or stuck: see log)'}")

    return app
