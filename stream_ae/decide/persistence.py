"""Persistence: alarm only when ``k`` of an asset's last ``n`` windows are above
the threshold. One noisy window no longer pages anyone; a real fault, which
stays, alarms after at most ``k − 1`` extra windows. ``k = n = 1`` is off.

State is per (partition, asset) and survives batches; it is part of the model's
decision rule (recorded in the artifact's threshold parameters as
``persistence_k`` / ``persistence_n``), so a model and its rule change together.
The recent verdicts also survive a restart (the scorer writes them with its marks,
:meth:`history` / :meth:`restore`) and a model swap (:meth:`carry_from`): a fault
that straddles either still alarms when it would have without it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from stream_ae.errors import ConfigError
from stream_ae.windowing import WindowBatch

Key = tuple[int, str]


@dataclass
class Persistence:
    k: int = 1
    n: int = 1
    _recent: dict[Key, deque[bool]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n:
            raise ConfigError(
                f"persistence needs 1 <= k <= n, got k={self.k}, n={self.n}",
                hint="set decide.persistence_k and decide.persistence_n",
            )

    @classmethod
    def from_params(
        cls, params: Mapping[str, float], default_k: int, default_n: int
    ) -> Persistence:
        """The rule a model recorded in its threshold ``params`` (``persistence_k/n``),
        else the defaults (the settings, or 1/1)."""
        return cls(
            k=int(params.get("persistence_k", default_k)),
            n=int(params.get("persistence_n", default_n)),
        )

    @property
    def active(self) -> bool:
        return self.n > 1

    def apply(self, windows: WindowBatch, anomalous: np.ndarray) -> np.ndarray:
        """Windows of one asset must come in start order (the windower's order)."""
        if not self.active:
            return anomalous
        out = np.zeros(len(anomalous), bool)
        keys = zip(windows.partitions.tolist(), windows.asset_ids, strict=True)
        for i, (key, verdict) in enumerate(zip(keys, anomalous.tolist(), strict=True)):
            recent = self._recent.get(key)
            if recent is None:
                recent = self._recent[key] = deque(maxlen=self.n)
            recent.append(bool(verdict))
            out[i] = sum(recent) >= self.k
        return out

    def history(self, key: Key) -> list[bool] | None:
        """``key``'s recent verdicts, oldest first (None: none yet, or persistence off)."""
        recent = self._recent.get(key)
        return list(recent) if recent else None

    def restore(self, key: Key, verdicts: Iterable[bool]) -> None:
        """Take ``key``'s recent verdicts back (from :meth:`history`); only the newest
        ``n`` count."""
        if self.active:
            self._recent[key] = deque(map(bool, verdicts), maxlen=self.n)

    def carry_from(self, other: Persistence) -> None:
        """Keep ``other``'s recent verdicts (a model swap: the new rule counts the
        windows the old model judged, so a fault in progress is not re-counted)."""
        for key, recent in other._recent.items():
            self.restore(key, recent)

    def forget(self, keys: Iterable[Key]) -> None:
        for k in keys:
            self._recent.pop(k, None)

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """Drop the history of partitions this process gave away, so that an asset
        coming back needs ``k`` fresh windows above the threshold again."""
        gone = set(partitions)
        self.forget([k for k in self._recent if k[0] in gone])
