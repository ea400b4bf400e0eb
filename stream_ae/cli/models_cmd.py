"""``stream-ae models``: list, inspect, promote and roll back registered model versions.

The registry itself is :mod:`stream_ae.registry`; this module only formats. It
imports the registry (and with it torch) inside the commands, so ``--help``
stays fast. Errors are :class:`~stream_ae.errors.StreamAEError` subclasses and
propagate to the main CLI, which prints them as one line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stream_ae.errors import ConfigError

if TYPE_CHECKING:
    from stream_ae.registry import Registry, Unreadable, VersionInfo

__all__ = ["DEFAULT_REGISTRY", "register"]

DEFAULT_REGISTRY = Path("registry")

console = Console(highlight=False, soft_wrap=True)  # long lines: let the terminal wrap

RegistryOpt = Annotated[
    Path,
    typer.Option("--registry", help="Model registry folder.", show_default=True),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
ReasonOpt = Annotated[
    str | None, typer.Option("--reason", help="Why (stored in the decision log).")
]


def _registry(root: Path) -> Registry:
    from stream_ae.registry import Registry

    return Registry(root)


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _metrics_text(metrics: dict[str, Any], limit: int = 3) -> str:
    """The first few scalar metrics as ``name=value``; nested objects are left to ``show``."""
    items = [
        f"{k}={_num(v)}"
        for k, v in metrics.items()
        if isinstance(v, int | float | str | None) and not isinstance(v, bool)
    ]
    more = len(items) - limit
    return ", ".join(items[:limit]) + (f" (+{more})" if more > 0 else "")


def _threshold_text(info: VersionInfo) -> str:
    return f"{info.threshold.method} {info.threshold.value:.6g}"


_STATUS_STYLES = {
    "champion": "bold green",
    "retired": "dim",
    "candidate": "",
    "rejected": "red",
    "held": "yellow",
    "unreadable": "bold red",
}


def _status_text(status: str) -> str:
    style = _STATUS_STYLES.get(status, "")
    return f"[{style}]{status}[/]" if style else status


def _decision_text(d: dict[str, Any]) -> str:
    """One decision log record; reject/hold name the champion they left in place."""
    who = (
        f"champion {d.get('champion')}"
        if d.get("action") in ("reject", "hold", "prune")
        else f"previous {d.get('previous')}"
    )
    return escape(
        f"  #{d.get('seq')} {d.get('at')} {d.get('action')} {d.get('version')} "
        f"({who}): {json.dumps(d.get('decision', {}))}"
    )


#: ``models show`` lists this many per-asset thresholds; ``--json`` has all of them
SHOW_PER_ASSET = 20


def _print_per_asset(version: str, thr: dict[str, Any]) -> None:
    """The assets with their own threshold, those furthest from the fleet value first."""
    per_asset: dict[str, Any] = thr["per_asset"]
    fleet = float(thr["value"])
    min_windows = thr.get("per_asset_min_windows")
    need = f" (at least {min_windows} calibration windows)" if min_windows else ""
    console.print(
        f"  per-asset thresholds: {len(per_asset)} assets have their own{need}; "
        "every other asset uses the fleet threshold above"
    )
    if not per_asset:
        return

    def spread(item: tuple[str, Any]) -> float:
        value = float(item[1]["value"])
        return abs(math.log(value / fleet)) if value > 0 and fleet > 0 else math.inf

    shown = sorted(sorted(per_asset.items()), key=spread, reverse=True)[:SHOW_PER_ASSET]
    table = Table(box=None, padding=(0, 2))
    for col in ("asset", "threshold", "x fleet", "windows"):
        table.add_column(col, justify="left" if col == "asset" else "right")
    for asset, entry in shown:
        value = float(entry["value"])
        ratio = f"{value / fleet:.3g}" if fleet > 0 else "-"
        table.add_row(asset, f"{value:.6g}", ratio, str(entry.get("n", "?")))
    console.print(table)
    more = len(per_asset) - len(shown)
    if more > 0:
        console.print(
            f"  ... the {len(shown)} furthest from the fleet value; {more} more in "
            f"`stream-ae models show {version} --json`"
        )


def _size(n: int) -> str:
    """Bytes in words: 512 B, 4.1 kB, 3.2 MB, 1.5 GB."""
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("kB", "MB", "GB"):
        value /= 1000
        if value < 1000 or unit == "GB":
            break
    return f"{value:.1f} {unit}"


def _print_json(data: Any) -> None:
    # plain print: machine-readable output must not be wrapped or styled
    print(json.dumps(data, indent=2, default=str))


AnnounceOpt = Annotated[
    bool,
    typer.Option(
        "--announce/--no-announce",
        help="Also tell running scorers on the control topic (topics.models).",
    ),
]


def _send(reg: Any, version: str) -> None:
    """Publish ``version`` on the control topic so running scorers switch to it; a
    broker that cannot be reached is a warning (the promotion stands). Plain sender:
    callers pass it to :meth:`Registry.announce`, which picks the version."""
    from stream_ae.cli import get_settings
    from stream_ae.errors import KafkaIOError
    from stream_ae.service import announce_champion

    # one quick attempt: promotion must not hang on a missing broker (nor hold the lock)
    settings = get_settings({"kafka": {"connect_attempts": 1}})
    try:
        ann = announce_champion(settings, reg.path_of(version))
    except KafkaIOError as exc:
        console.print(
            f"[yellow]warning:[/] running scorers were not told ({exc}); "
            "resend with `stream-ae models announce` once Kafka is reachable"
        )
        return
    console.print(f"announced {ann.version} on {settings.topics.models}")


def _announce(reg: Any, version: str | None = None) -> None:
    """Publish the champion on the control topic so running scorers switch to it.

    What ``CHAMPION`` says is announced while the registry's writer lock is held
    (:meth:`Registry.announce`): a promotion made meanwhile by someone else is
    announced instead of ``version`` (the one this command promoted), so the last
    announcement is always the champion. The registry is the record; the
    announcement is the notification. When Kafka cannot be reached the promotion
    stands and the message says how to resend it."""

    def send(champion: str) -> None:
        if version is not None and champion != version:
            console.print(
                f"[yellow]note:[/] the champion is {champion} by now (promoted or rolled "
                f"back meanwhile): announcing it instead of {version}"
            )
        _send(reg, champion)

    reg.announce(send)


def register(app: typer.Typer) -> None:
    """Add the ``models`` command group to ``app``."""
    models = typer.Typer(
        name="models",
        help="List, inspect, promote and roll back registered model versions.",
        no_args_is_help=True,
    )

    @models.command("list")
    def list_(
        registry: RegistryOpt = DEFAULT_REGISTRY,
        as_json: JsonOpt = False,
    ) -> None:
        """Every registered version, oldest first, with its status and headline metrics.

        Below the table: why each rejected (failed the gate) or held (passed, not
        promoted) version is so, e.g. the failing rule; why each unreadable folder
        cannot be read; and a warning when the champion is not a readable version."""
        from stream_ae.registry import Unreadable

        reg = _registry(registry)
        infos, unreadable = reg.scan()
        rows: list[VersionInfo | Unreadable] = sorted(
            [*infos, *unreadable], key=lambda r: r.version
        )
        if as_json:
            _print_json([r.to_dict() for r in rows])
            return
        if not rows:
            console.print(f"no versions registered in {registry}")
            return
        table = Table(title=f"models in {registry}", title_justify="left")
        # no "created" column: version names start with the UTC creation time
        for col in ("version", "status", "arch", "threshold", "metrics"):
            table.add_column(col, overflow="fold", no_wrap=col != "metrics")
        for r in rows:
            if isinstance(r, Unreadable):
                table.add_row(escape(r.version), _status_text("unreadable"), "?", "?", "")
                continue
            table.add_row(
                r.version,
                _status_text(r.status),
                r.architecture,
                _threshold_text(r),
                _metrics_text(r.metrics),
            )
        console.print(table)
        for r in rows:
            if isinstance(r, Unreadable):
                console.print(f"{escape(r.version)} {_status_text('unreadable')}: {escape(r.why)}")
            elif r.status_reason:  # one line each: too long for a table cell
                console.print(f"{r.version} {_status_text(r.status)}: {escape(r.status_reason)}")
        champion = reg.champion_pointer()
        if champion is not None and all(i.version != champion for i in infos):
            console.print(
                f"[yellow]warning:[/] the champion {escape(champion)} is not a readable "
                f"version; {escape(reg.repair_hint())}"
            )

    @models.command()
    def show(
        version: Annotated[str, typer.Argument(help="A registered version.")],
        registry: RegistryOpt = DEFAULT_REGISTRY,
        as_json: JsonOpt = False,
    ) -> None:
        """Metadata (threshold method, parameters and per-asset thresholds), report, decisions."""
        data = _registry(registry).show(version)
        if as_json:
            _print_json(data)
            return
        meta = data["metadata"]
        thr = meta["threshold"]
        status = _status_text(data["status"])
        console.print(f"[bold]{data['version']}[/]  ({status})  {data['path']}")
        if data.get("status_reason"):
            console.print(f"  {status}: {escape(data['status_reason'])}")
        console.print(
            f"  created {meta['created_at']}  architecture {meta['architecture']} "
            f"{meta['hparams']}  torch {meta['torch_version']}"
        )
        console.print(
            f"  channels ({len(meta['channels'])}): {', '.join(meta['channels'])}\n"
            f"  window {meta['window']} samples, hop {meta['hop']}, "
            f"period {meta['sample_period_ms']} ms"
        )
        params = ", ".join(f"{k}={_num(v)}" for k, v in thr.get("params", {}).items())
        console.print(f"  threshold [bold]{thr['value']:.6g}[/] ({thr['method']}: {params})")
        if thr.get("per_asset") is not None:
            _print_per_asset(data["version"], thr)
        console.print(f"  weights sha256 {meta['weights_sha256']}")
        for title, section in (
            ("training", meta.get("training")),
            ("metadata metrics", meta.get("metrics")),
            ("report", data["report"]),
        ):
            if section:
                console.print(f"[bold]{title}[/]")
                console.print_json(json.dumps(section, default=str))
        if data["decisions"]:
            console.print("[bold]decisions[/]")
            for d in data["decisions"]:
                console.print(_decision_text(d))
        else:
            console.print("no decisions involve this version")

    @models.command()
    def promote(
        version: Annotated[str, typer.Argument(help="The version to serve.")],
        reason: ReasonOpt = None,
        registry: RegistryOpt = DEFAULT_REGISTRY,
        announce: AnnounceOpt = True,
    ) -> None:
        """Make VERSION the champion; the decision log records the reason and both metrics."""
        reg = _registry(registry)
        info = {i.version: i for i in reg.versions()}  # unreadable ones: warned, left out
        previous = reg.champion_pointer()  # missing or damaged: this promotion repairs it
        decision: dict[str, Any] = {
            "reason": reason or "manual promotion",
            "source": "cli",
            "metrics": info[version].metrics if version in info else {},
            "previous_metrics": info[previous].metrics if previous in info else None,
        }
        reg.promote(version, decision=decision)
        if version in info and info[version].status == "rejected":
            console.print(
                f"[yellow]note:[/] the gate had rejected {version} "
                f"({escape(info[version].status_reason or 'no reason recorded')})"
            )
        gone = " [yellow](missing or unreadable)[/]" if previous and previous not in info else ""
        console.print(
            f"[green]promoted[/] {version} (previous champion: {previous or 'none'}{gone})"
        )
        if announce:
            _announce(reg, version)

    @models.command()
    def rollback(
        reason: ReasonOpt = None,
        registry: RegistryOpt = DEFAULT_REGISTRY,
        announce: AnnounceOpt = True,
    ) -> None:
        """Make the previous champion (per the decision log) the champion again."""
        reg = _registry(registry)
        current = reg.champion_pointer()  # one that is missing: rollback() says what to run
        target = reg.rollback(decision={"reason": reason or "manual rollback", "source": "cli"})
        console.print(f"[yellow]rolled back[/] to {target} (was {current})")
        if announce:
            _announce(reg, target)

    @models.command()
    def announce(registry: RegistryOpt = DEFAULT_REGISTRY) -> None:
        """Tell running scorers (again) which version is the champion."""
        reg = _registry(registry)
        if reg.champion() is None:
            raise ConfigError(f"no champion in {registry}", hint="promote a version first")
        _announce(reg)

    @models.command()
    def prune(
        keep: Annotated[
            int,
            typer.Option("--keep", min=1, help="Keep this many newest versions (at least 1)."),
        ],
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Only say what would be removed.")
        ] = False,
        reason: ReasonOpt = None,
        registry: RegistryOpt = DEFAULT_REGISTRY,
        as_json: JsonOpt = False,
    ) -> None:
        """Delete the oldest versions beyond the KEEP newest, never the champion nor a
        version rollback can return to; each deletion goes into the decision log.
        Also removes `.candidate-*` folders left by killed retraining rounds."""
        res = _registry(registry).prune(keep, dry_run=dry_run, reason=reason)
        if as_json:
            _print_json(res.to_dict())
            return
        verb = "would remove" if dry_run else "removed"
        for version, size in res.removed:
            console.print(f"{verb} {version} ({_size(size)})")
        for folder, size in res.stale_candidates:
            console.print(f"{verb} {escape(folder)} ({_size(size)}, left by a killed round)")
        if res.protected:
            console.print(
                f"kept {len(res.protected)} older version(s) the champion history needs "
                f"(champion or rollback targets): {', '.join(res.protected)}"
            )
        n = len(res.removed)
        console.print(
            f"{verb} {n} version(s), {len(res.stale_candidates)} stale candidate folder(s): "
            f"{_size(res.freed)} {'would be freed' if dry_run else 'freed'}; "
            f"{len(res.kept) + len(res.protected)} version(s) kept"
        )

    app.add_typer(models, name="models")
