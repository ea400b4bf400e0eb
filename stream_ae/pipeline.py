"""The pure pipeline: messages → (events, scores, data-quality events, dead letters).

It composes decode → windowing → scoring → deciding and owns no I/O: the
runtime loop (:mod:`stream_ae.service`) moves its outputs to Kafka, and tests
drive it with plain objects. Time is an argument (``now_ms``). Maintenance
feedback comes in the same way (:meth:`Pipeline.note_feedback`): the pipeline
holds the periods and tags the events of windows that overlap one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import msgspec
import numpy as np

from stream_ae.decide.drift import DriftMonitor
from stream_ae.decide.events import Decider, quality_events
from stream_ae.decide.maintenance import MaintenancePeriods, Note
from stream_ae.decode import DecodedBatch, ReadingDecoder
from stream_ae.metrics import Metrics
from stream_ae.schemas import (
    AnomalyEvent,
    DataQualityEvent,
    DeadLetter,
    FeedbackEvent,
    LatentRecord,
    MessageLike,
    ScoreRecord,
    iso_ms,
    latent_records,
)
from stream_ae.windowing import GridSpec, StepResult, WindowBatch, Windower
from stream_ae.windowing.asset_grid import GapState
from stream_ae.windowing.rebaseline import BaselineState, Rebaseliner

log = logging.getLogger(__name__)


class ScoreLike(Protocol):
    @property
    def scores(self) -> np.ndarray: ...  # (B,)

    @property
    def channel_shares(self) -> np.ndarray: ...  # (B, C)


class WindowScorer(Protocol):
    """Anything that scores ``(B, C, W)`` float32 windows (higher = more anomalous)."""

    def score(self, windows: np.ndarray) -> ScoreLike: ...


@dataclass
class StepOutput:
    events: list[AnomalyEvent] = field(default_factory=list)
    scores: list[ScoreRecord] = field(default_factory=list)
    latents: list[LatentRecord] = field(default_factory=list)
    quality: list[DataQualityEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    windows: int = 0
    #: partition -> next offset after the last message of this batch
    consumed: dict[int, int] = field(default_factory=dict)


class _LateReading(msgspec.Struct):
    asset_id: str
    ts: int
    values: dict[str, float]


class GapRecord(msgspec.Struct, omit_defaults=True):
    """An asset's gap state at a commit (:class:`~stream_ae.windowing.asset_grid.GapState`);
    ``{}``: no gap open, the asset has had a valid row."""

    #: the open gap's first row (epoch ms); None: no gap open
    start_ms: int | None = None
    #: its ``channels_missing`` alert was published
    alerted: bool = False
    #: no valid row yet (a gap's end is then reported only if it was alerted)
    never_valid: bool = False


class AssetState(msgspec.Struct, omit_defaults=True):
    """What the scorer keeps per (partition, asset) across a restart, written with its
    marks (:meth:`Pipeline.asset_state`): the start of the last published window, the
    persistence verdicts and the re-baselining state as of that window, and the gap
    state at the commit (a replay starts inside an open gap: the commits move on
    while it lasts). A replay from the committed offset then decides every later
    window, and reports every later gap, as an uninterrupted run would. Records of
    older versions hold the mark only, or no gap state (the replay then keeps its
    own view of the gaps). The partition's record (key ``"<p>|"``) holds its
    consumed position at the commit in ``window_start_ms``."""

    window_start_ms: int
    recent: list[bool] | None = None
    baseline: BaselineState | None = None
    #: the channels the baseline's values belong to, in order
    channels: list[str] | None = None
    gap: GapRecord | None = None


@dataclass(frozen=True)
class ModelBinding:
    """What the pipeline needs of a loaded model."""

    scorer: WindowScorer
    decider: Decider
    spec: GridSpec
    #: (C,) mean of the training data in raw units (for warm-up re-baselining)
    reference_mean: np.ndarray | None = None
    #: inputs and scores against the training period (reported, not acted on)
    drift: DriftMonitor | None = None
    #: raw windows (B, C, W) -> latent vectors (B, L), for the latents topic
    encoder: Callable[[np.ndarray], np.ndarray] | None = None


class Pipeline:
    def __init__(
        self,
        model: ModelBinding,
        *,
        max_future_ms: int,
        idle_timeout_ms: int | None = None,
        publish_scores: bool = False,
        publish_latents: bool = False,
        track_marks: bool = False,
        rebaseline_ms: int = 0,
        tag_maintenance: bool = True,
        maintenance_open_max_ms: int = 0,
    ) -> None:
        self.model = model
        self.decoder = ReadingDecoder(model.decider.channels, max_future_ms=max_future_ms)
        self.windower = Windower(model.spec, idle_timeout_ms=idle_timeout_ms)
        self.publish_scores = publish_scores
        self.publish_latents = publish_latents
        self.metrics = Metrics()
        # Start of the last scored window per (partition, asset); windows at or before a
        # mark were published before a restart and are skipped. Dirty keys' state
        # (:meth:`asset_state`) is written at the next commit.
        self.track_marks = track_marks
        self.marks: dict[tuple[int, str], int] = {}
        self.dirty_marks: set[tuple[int, str]] = set()
        #: partition -> next offset after the last message stepped
        self.consumed: dict[int, int] = {}
        self.suppressed_windows = 0
        self.rebaseline_ms = rebaseline_ms
        self.rebaseliner = self._new_rebaseliner(model)
        # Per asset id, not per partition, and kept across swaps and rebalances: the
        # feedback topic is read whole by every scorer (decide.tag_maintenance).
        self.maintenance = (
            MaintenancePeriods(open_max_ms=maintenance_open_max_ms) if tag_maintenance else None
        )

    @property
    def channels(self) -> list[str]:
        return self.decoder.channels

    def step(self, messages: Sequence[MessageLike], *, now_ms: int) -> StepOutput:
        out = StepOutput()
        if not messages:
            return out
        decoded = self.decoder.decode(messages, now_ms=now_ms)
        parts = np.fromiter((m.partition() or 0 for m in messages), np.int64, len(messages))
        offs = np.fromiter((m.offset() or 0 for m in messages), np.int64, len(messages))
        for p in np.unique(parts).tolist():
            out.consumed[p] = nxt = int(offs[parts == p].max()) + 1
            self.consumed[p] = max(self.consumed.get(p, 0), nxt)
        m = self.metrics
        m.messages += len(messages)
        m.readings += len(decoded)
        m.unknown_channels.update(decoded.unknown_channels)
        m.readings_no_model_channel += decoded.no_model_channel
        out.dead_letters.extend(decoded.dead_letters)
        result = self.windower.process(
            decoded.asset_ids,
            parts[decoded.msg_index],
            offs[decoded.msg_index],
            decoded.ts_ms,
            decoded.values,
            now_ms=now_ms,
        )
        if result.late.any():
            out.dead_letters.extend(self._late_letters(messages, decoded, result.late))
        self._finish(result, out, now_ms)
        return out

    def tick(self, *, now_ms: int) -> StepOutput:
        """Periodic work without new messages: close silent assets."""
        out = StepOutput()
        self._finish(self.windower.sweep_idle(now_ms), out, now_ms)
        return out

    def flush(self, *, now_ms: int) -> StepOutput:
        """End of a bounded input: emit every window that can still be completed."""
        out = StepOutput()
        self._finish(self.windower.flush_all(), out, now_ms)
        return out

    def note_maintenance(self, asset_id: str, end_ms: int) -> bool:
        """Maintenance on ``asset_id`` ended at ``end_ms`` (event time): with
        re-baselining on, its first window starting then or later opens a new
        warm-up (:meth:`Rebaseliner.note_restart`). False when re-baselining is off."""
        if self.rebaseliner is None:
            return False
        self.rebaseliner.note_restart(asset_id, end_ms)
        self.metrics.maintenance_reports += 1
        return True

    def note_feedback(self, feedback: FeedbackEvent) -> Note | None:
        """A feedback record (any kind): maintenance periods tag the anomaly events of
        the windows that overlap them from now on (:mod:`stream_ae.decide.maintenance`
        has the rules). None when tagging is off. Warm-ups after maintenance are
        :meth:`note_maintenance`'s."""
        if self.maintenance is None:
            return None
        return self.maintenance.note(feedback)

    def asset_state(self, key: tuple[int, str]) -> AssetState:
        """``key``'s state to store with the marks (see :class:`AssetState`)."""
        persistence = self.model.decider.persistence
        baseline = None if self.rebaseliner is None else self.rebaseliner.snapshot(key)
        gap = self.windower.gap_state(key)
        return AssetState(
            window_start_ms=self.marks.get(key, -1),
            recent=None if persistence is None else persistence.history(key),
            baseline=baseline,
            channels=None if baseline is None else list(self.channels),
            gap=None
            if gap is None
            else GapRecord(
                start_ms=None if gap.start is None else gap.start * self.model.spec.period_ms,
                alerted=gap.alerted,
                never_valid=not gap.ever_valid,
            ),
        )

    def restore_position(self, partition: int, consumed: int) -> None:
        """``partition`` is replayed from a commit made when ``consumed`` was its
        consumed position (the partition's record with the marks): the gap events
        and alerts of readings below it were published then, and each asset takes
        its stored gap state there (:mod:`stream_ae.windowing.windower`)."""
        self.windower.restore_position(partition, consumed)

    def restore_asset(self, key: tuple[int, str], state: AssetState) -> bool:
        """Take back what :meth:`asset_state` stored (a partition given to this process).
        False when the baseline could not be taken (the model has other channels, or
        the same in another order: the asset warms up afresh); the mark, the verdicts
        and the gap state are taken regardless (a gap start off this model's grid,
        from a model with another sample period, is not: the replay keeps its own
        view of that asset's gaps)."""
        self.marks[key] = state.window_start_ms
        self.windower.restore_gap(key, self._gap_state(state.gap))
        persistence = self.model.decider.persistence
        if state.recent is not None and persistence is not None:
            persistence.restore(key, state.recent)
        if state.baseline is None or self.rebaseliner is None:
            return True
        if state.channels != list(self.channels):
            return False
        return self.rebaseliner.restore(key, state.baseline)

    def _gap_state(self, record: GapRecord | None) -> GapState | None:
        if record is None:
            return None
        period = self.model.spec.period_ms
        if record.start_ms is None:
            return GapState(None, False, not record.never_valid)
        if record.start_ms % period:
            return None
        return GapState(record.start_ms // period, record.alerted, not record.never_valid)

    def committable(self, consumed: dict[int, int]) -> dict[int, int]:
        """Offsets safe to commit: never past the first reading an open window needs."""
        safe = {}
        for p, nxt in consumed.items():
            pin = self.windower.committable(p)
            safe[p] = nxt if pin is None else min(pin, nxt)
        return safe

    # -- internals ---------------------------------------------------------------------

    def _finish(self, result: StepResult, out: StepOutput, now_ms: int) -> None:
        m = self.metrics
        for d in out.dead_letters:
            m.dead_letters[d.reason] += 1
        if self.track_marks and result.gap_changes:
            self.dirty_marks.update(result.gap_changes)  # their stored gap state changed
        windows = result.windows
        if result.gaps and self.rebaseliner is not None:
            gaps = result.gaps
            if self.track_marks:
                # A replay meets gaps whose new warm-up began before the mark (the
                # stored state has it): noting one again would restart that warm-up.
                marks = self.marks
                gaps = [
                    g
                    for g in gaps
                    if Rebaseliner.restart_ms(g) > marks.get((g.partition, g.asset_id), -1)
                ]
                self.dirty_marks.update((g.partition, g.asset_id) for g in gaps)
            self.rebaseliner.note_gaps(gaps)  # before scoring: exact per window
        if len(windows):
            self._score(windows, out, now_ms)
        if result.gaps or result.alerts:
            # an alert is a gap still open: no warm-up restarts until it closes (above)
            q = quality_events(
                result.gaps,
                now_ms=now_ms,
                period_ms=self.model.spec.period_ms,
                alerts=result.alerts,
                channels=self.channels,
            )
            out.quality.extend(q)
            m.quality_events += len(q)

    def _new_rebaseliner(self, model: ModelBinding) -> Rebaseliner | None:
        if self.rebaseline_ms <= 0:
            return None
        if model.reference_mean is None:
            raise ValueError("re-baselining needs the model's reference mean")
        return Rebaseliner(self.rebaseline_ms, model.reference_mean)

    def _score(self, windows: WindowBatch, out: StepOutput, now_ms: int) -> None:
        if self.maintenance is not None and len(windows):
            self.maintenance.advance(int(windows.start_ms.max()))
        if self.track_marks:
            windows = self._skip_published(windows)
        if (rb := self.rebaseliner) is not None:
            before, restarts = len(windows), rb.maintenance_restarts
            windows = rb.apply(windows)
            self.metrics.warmup_windows += before - len(windows)
            self.metrics.maintenance_rebaselines += rb.maintenance_restarts - restarts
        if not len(windows):
            return
        res = self.model.scorer.score(windows.values)
        if self.model.drift is not None:
            self.model.drift.update(windows.values, res.scores, windows.asset_ids)
        decider = self.model.decider
        limits = decider.limits(windows)  # once per batch: events and score records
        events = decider.events(
            windows,
            res.scores,
            res.channel_shares,
            now_ms=now_ms,
            limits=limits,
            maintenance=self.maintenance,
        )
        self.metrics.events_during_maintenance += sum(e.during_maintenance for e in events)
        if self.maintenance is not None:
            for asset, began in self.maintenance.take_overdue():
                log.warning(
                    "maintenance on %s open since %s for more than %.0f h without a "
                    "maintenance_end: its anomaly events are no longer tagged "
                    "during_maintenance (decide.maintenance_open_max_h); send "
                    "maintenance_end when it ends",
                    asset,
                    iso_ms(began),
                    self.maintenance.open_max_ms / 3_600_000,
                )
        out.events.extend(events)
        if self.publish_scores:
            out.scores.extend(decider.score_records(windows, res.scores, limits))
        if self.publish_latents and self.model.encoder is not None:
            vectors = self.model.encoder(windows.values)
            out.latents.extend(
                latent_records(
                    windows.asset_ids,
                    windows.start_ms.tolist(),
                    windows.end_ms.tolist(),
                    vectors.tolist(),
                    decider.model_version,
                )
            )
        out.windows += len(windows)
        self.metrics.windows += len(windows)
        self.metrics.events += len(out.events)

    def _skip_published(self, windows: WindowBatch) -> WindowBatch:
        marks = self.marks
        keys = list(zip(windows.partitions.tolist(), windows.asset_ids, strict=True))
        starts = windows.start_ms.tolist()
        fresh = np.array([s > marks.get(k, -1) for k, s in zip(keys, starts, strict=True)], bool)
        self.suppressed_windows += int((~fresh).sum())
        for k, s, f in zip(keys, starts, fresh.tolist(), strict=True):
            if f:
                marks[k] = s  # windows of one asset arrive in increasing start order
                self.dirty_marks.add(k)
        return windows if fresh.all() else windows.select(fresh)

    def swap_model(self, binding: ModelBinding) -> bool:
        """Switch models at a batch boundary; return True when the caller must replay.

        Same grid (period, W, H, lateness, fill) and channels: the windowing state
        carries over and every window emitted from now on is scored by the new
        model — none is dropped or scored twice. Otherwise the grid is rebuilt for
        the new model: each asset's windows restart at the start of the window it
        would have emitted next (earlier ones were the old model's), and the caller
        must replay every partition from :meth:`committable` (taken *before* this
        call) so the new grid can fill. Settled reading outcomes carry over; the
        replayed readings are counted again (``metrics.replayed_readings``).
        Either way the persistence verdicts and the re-baselining state carry over
        (the baselines only where the channels are the same): a swap is not a
        restart of the machines, and must not re-learn a faulty asset as normal.
        The replay is one from the consumed positions as of the swap
        (:meth:`restore_position`): the gap events and alerts of readings before them
        were the old grid's, and are not emitted again. The gap state carries over
        as across a restart where the rows mean the same (same channels, period,
        lateness and fill limit: only W, H or the alert delay differ), so a gap open
        at the swap goes on from its start, not alerted again; otherwise the new
        grid keeps its own view (other rows make other gaps).
        """
        old = self.model
        self.metrics.model_swaps += 1
        new_rule, old_rule = binding.decider.persistence, old.decider.persistence
        if new_rule is not None and old_rule is not None and new_rule is not old_rule:
            new_rule.carry_from(old_rule)
        same_channels = list(old.decider.channels) == list(binding.decider.channels)
        if old.spec == binding.spec and same_channels:
            if self.rebaseliner is not None:  # settled baselines stay; the reference moves
                if binding.reference_mean is None:
                    raise ValueError("re-baselining needs the model's reference mean")
                self.rebaseliner.set_reference(binding.reference_mean)
            self.model = binding
            return False
        for key, start_ms in self.windower.next_window_starts_ms().items():
            self.marks[key] = max(self.marks.get(key, -1), start_ms - 1)
            self.dirty_marks.add(key)
        self.track_marks = True
        self.metrics.replayed_readings += self.windower.open_readings()
        fresh = Windower(binding.spec, idle_timeout_ms=self.windower.idle_timeout_ms)
        fresh.carry_accounting_from(self.windower)
        positions = self.windower.positions()
        for p, nxt in self.consumed.items():
            positions[p] = max(positions.get(p, nxt), nxt)
        for p, nxt in positions.items():
            fresh.restore_position(p, nxt)
        same_rows = binding.spec == dataclasses.replace(
            old.spec, size=binding.spec.size, hop=binding.spec.hop, gap_alert=binding.spec.gap_alert
        )
        for key in self.windower.gap_keys():
            gap = self.windower.gap_state(key) if same_rows and same_channels else None
            fresh.restore_gap(key, gap)
            self.dirty_marks.add(key)  # stored again as the new grid has it
        self.windower = fresh
        self.decoder = ReadingDecoder(
            binding.decider.channels, max_future_ms=self.decoder.max_future_ms
        )
        old_rebaseliner, self.rebaseliner = self.rebaseliner, self._new_rebaseliner(binding)
        if old_rebaseliner is not None and self.rebaseliner is not None:
            if same_channels:
                self.rebaseliner.carry_from(old_rebaseliner)
            else:  # a baseline is per channel: other channels warm up afresh
                self.rebaseliner.carry_pending_from(old_rebaseliner)
        self.model = binding
        return True

    def forget_partitions(self, partitions: Sequence[int]) -> None:
        """Drop windowing, re-baselining and persistence state and the marks of
        partitions this process gave away. The next owner (this process again,
        perhaps) starts from the committed offsets and the state stored with the
        marks (:meth:`restore_asset`), not from what this process held."""
        gone = set(partitions)
        self.windower.revoke(gone)
        if self.rebaseliner is not None:
            self.rebaseliner.forget_partitions(gone)
        if self.model.decider.persistence is not None:
            self.model.decider.persistence.forget_partitions(gone)
        self.marks = {k: v for k, v in self.marks.items() if k[0] not in gone}
        self.dirty_marks = {k for k in self.dirty_marks if k[0] not in gone}
        self.consumed = {p: o for p, o in self.consumed.items() if p not in gone}

    def _late_letters(
        self, messages: Sequence[MessageLike], decoded: DecodedBatch, late: np.ndarray
    ) -> list[DeadLetter]:
        letters = []
        owners = decoded.msg_index
        late_idx = np.flatnonzero(late)
        per_msg: dict[int, list[int]] = {}
        for i in late_idx.tolist():
            per_msg.setdefault(int(owners[i]), []).append(i)
        total = np.bincount(owners, minlength=len(messages))
        enc = msgspec.json.Encoder()
        spec = self.model.spec
        for mi, rows in per_msg.items():
            msg = messages[mi]
            partial = len(rows) < int(total[mi])
            if partial:
                value = enc.encode(
                    [
                        _LateReading(
                            decoded.asset_ids[r],
                            int(decoded.ts_ms[r]),
                            {
                                c: float(v)
                                for c, v in zip(
                                    self.channels, decoded.values[r].tolist(), strict=True
                                )
                                if not math.isnan(v)
                            },
                        )
                        for r in rows
                    ]
                )
            else:
                value = msg.value() or b""
            first = rows[0]
            letters.append(
                DeadLetter(
                    reason="late",
                    stage="windowing",
                    error=(
                        f"{len(rows)} of {int(total[mi])} readings arrived after their asset's "
                        f"watermark (window.allowed_lateness_ms = {spec.lateness_ms}); "
                        "raise the setting if such delays are normal"
                    ),
                    value=value,
                    key=msg.key(),
                    source_topic=msg.topic() or "",
                    source_partition=msg.partition() or 0,
                    source_offset=msg.offset() or 0,
                    asset_id=decoded.asset_ids[first],
                    partial=partial,
                )
            )
        return letters
