"""Event-time windowing: pure numpy, no Kafka, no torch; time is always an argument.

Readings of each asset are aligned onto a regular grid (``window.sample_period_ms``),
closed by a per-asset watermark, forward-filled over short holes, and cut into
sliding windows of W samples every H samples. See :mod:`.asset_grid` for the rules
and :mod:`.windower` for the many-asset driver the scorer and trainer share.
"""

from stream_ae.windowing.asset_grid import GridSpec
from stream_ae.windowing.windower import StepResult, WindowBatch, Windower

__all__ = ["GridSpec", "StepResult", "WindowBatch", "Windower"]
