"""Counters the scorer keeps and logs; every reading lands in exactly one outcome.

The stats line reconciles: ``readings`` = the windowing outcomes (``scored``,
``unwindowed``, ``incomplete``, ``late``) + ``open_readings`` (in windows still
open) + ``revoked_readings`` (open when their partition went to another scorer,
which reads them again) + ``replayed_readings`` (open when a model swap rebuilt the
grid; the replay reads them again). A replay reads again some readings that had
settled too; ``readings`` and their outcome then count both arrivals.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Metrics:
    messages: int = 0
    readings: int = 0  # decoded and accepted at the decode stage
    windows: int = 0
    events: int = 0
    quality_events: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)  # by reason (messages)
    unknown_channels: Counter[str] = field(default_factory=Counter)
    model_swaps: int = 0
    model_swap_failures: int = 0
    replayed_readings: int = 0
    # readings of accepted messages that carry none of the model's channels (their
    # channels are counted in unknown_channels): skipped, outside the outcomes
    readings_no_model_channel: int = 0
    warmup_windows: int = 0  # re-baselining: windows that set a baseline, not scored
    # maintenance ends read from topics.feedback (all of it at start-up, every asset,
    # also those another scorer owns); maintenance_rebaselines: warm-ups they started
    maintenance_reports: int = 0
    maintenance_rebaselines: int = 0
    # anomaly events tagged during_maintenance (their window overlaps a maintenance
    # period from topics.feedback; still published, decide.tag_maintenance)
    events_during_maintenance: int = 0
    # exactly-once: failed transactions replayed from the last committed one
    transactions_rewound: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "readings": self.readings,
            "windows": self.windows,
            "events": self.events,
            "quality_events": self.quality_events,
            "dead_letters": dict(self.dead_letters),
            "unknown_channels": dict(self.unknown_channels),
            "readings_no_model_channel": self.readings_no_model_channel,
            "replayed_readings": self.replayed_readings,
            "model_swaps": self.model_swaps,
            "model_swap_failures": self.model_swap_failures,
            "warmup_windows": self.warmup_windows,
            "maintenance_reports": self.maintenance_reports,
            "maintenance_rebaselines": self.maintenance_rebaselines,
            "events_during_maintenance": self.events_during_maintenance,
            "transactions_rewound": self.transactions_rewound,
        }
