"""Readable backtest reports: per-file plots, attribution plots, summary tables.

``write_report(dir, runs, result)`` writes:

* ``<file>.png`` — the channels (each scaled to its own range), the window score
  against the threshold, the labelled anomaly (red band), the alarms (blue
  band) and, for the published SKAB rule, the rows it can never flag (grey), so
  a person sees at a glance where the model is right and wrong;
* ``<file>.alarm<k>.png`` — for each alarm stretch (up to 5 longest per file),
  each channel's mean share of the reconstruction error over it;
* ``summary.md`` and ``summary.json`` — the pooled metrics and one row per file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

from stream_ae.errors import DataError
from stream_ae.evaluate.backtest import FileRun
from stream_ae.evaluate.metrics import evaluate_file, events_from_labels

MAX_ALARM_PLOTS = 5


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "file"


def _bands(ax: Any, t: np.ndarray, mask: np.ndarray, colour: str, label: str) -> None:
    for k, (a, b) in enumerate(events_from_labels(mask.astype(np.int8))):
        ax.axvspan(
            t[a],
            t[min(b, len(t) - 1)],
            color=colour,
            alpha=0.18,
            lw=0,
            label=label if k == 0 else None,
        )


def plot_file(run: FileRun, path: Path) -> None:
    t = (run.ts_ms - run.ts_ms[0]) / 1000.0
    fig, (ax1, ax2) = plt.subplots(
        2, 1, figsize=(12, 6), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    v = run.values
    lo, hi = np.nanmin(v, axis=0), np.nanmax(v, axis=0)
    scaled = (v - lo) / np.where(hi > lo, hi - lo, 1.0)
    for c, name in enumerate(run.channels):
        ax1.plot(t, scaled[:, c] + c, lw=0.7, label=name)
    ax1.set_yticks(np.arange(len(run.channels)) + 0.5, run.channels, fontsize=7)
    ax1.set_title(f"{run.name}: channels (each scaled to its range)", fontsize=10)
    wt = (run.window_end_ms - run.ts_ms[0]) / 1000.0
    ax2.plot(wt, run.window_scores, lw=0.8, color="black", label="window score")
    ax2.axhline(run.threshold, color="orange", lw=1, ls="--", label="threshold")
    ax2.set_yscale("log")
    ax2.set_xlabel("seconds from the first test reading")
    for ax in (ax1, ax2):
        _bands(ax, t, run.labels.astype(bool), "red", "labelled anomaly")
    _bands(ax2, t, run.pred.astype(bool), "blue", "alarm")
    if run.can_flag is not None:
        _bands(ax2, t, ~run.can_flag, "grey", "the rule cannot flag")
    ax2.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_alarms(run: FileRun, stem: Path) -> list[Path]:
    """One attribution bar chart per alarm stretch (longest first)."""
    stretches = sorted(events_from_labels(run.pred), key=lambda ab: ab[0] - ab[1])
    out = []
    for k, (a, b) in enumerate(stretches[:MAX_ALARM_PLOTS]):
        start, end = run.ts_ms[a], run.ts_ms[b - 1]
        sel = (run.window_end_ms > start) & (run.window_end_ms <= end + 1)
        if not sel.any():
            continue
        shares = run.window_shares[sel].mean(axis=0)
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.barh(run.channels, shares, color="tab:blue")
        ax.invert_yaxis()
        ax.set_xlabel("mean share of reconstruction error")
        ax.set_title(f"{run.name}: alarm {k + 1} ({b - a} readings)", fontsize=9)
        fig.tight_layout()
        path = stem.with_name(f"{stem.name}.alarm{k + 1}.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        out.append(path)
    return out


def write_report(directory: Path, runs: list[FileRun], result: dict[str, Any]) -> Path:
    """Plots, ``summary.json`` and ``summary.md`` in ``directory``. The CLI checks the
    folder is writable before the run; a failure here (a full disk) is still named."""
    try:
        return _write_report(directory, runs, result)
    except OSError as exc:
        raise DataError(
            f"cannot write the report to {directory}: {exc.strerror or exc}",
            hint="free some space, or give --report a folder you can write to",
        ) from None


def _write_report(directory: Path, runs: list[FileRun], result: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for run in runs:
        stem = directory / _slug(run.name)
        plot_file(run, stem.with_suffix(".png"))
        plot_alarms(run, stem)
        s = evaluate_file(
            run.labels, run.pred, run.ts_ms, changepoints=run.changepoints, mask=run.counted
        ).summary()
        rows.append(
            {
                "file": run.name,
                "rows": len(run.labels),
                "anomalous": int(run.labels.sum()),
                "alarms": int(run.pred.sum()),
                "f1": s["f1"],
                "far": s["far"],
                "mar": s["mar"],
                "events_detected": s["events"]["detected"],
                "events": s["events"]["n"],
                "median_delay_s": (
                    None
                    if s["events"]["median_delay_ms"] is None
                    else s["events"]["median_delay_ms"] / 1000
                ),
                "plot": stem.with_suffix(".png").name,
            }
        )
    summary = {"result": result, "files": rows}
    (directory / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    lines = [
        "# Backtest report",
        "",
        f"{result.get('rule', '')}",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for k in ("f1", "far", "mar", "nab_standard", "nab_low_fp", "nab_low_fn"):
        lines.append(f"| {k} | {_fmt(result.get(k))} |")
    lines += [
        "",
        "| file | rows | anomalous | alarms | F1 | FAR % | MAR % | events found | delay s | plot |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['file']} | {r['rows']} | {r['anomalous']} | {r['alarms']} | {_fmt(r['f1'])} "
            f"| {_fmt(r['far'])} | {_fmt(r['mar'])} | {r['events_detected']}/{r['events']} "
            f"| {_fmt(r['median_delay_s'])} | ![]({r['plot']}) |"
        )
    (directory / "summary.md").write_text("\n".join(lines) + "\n")
    return directory


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)
