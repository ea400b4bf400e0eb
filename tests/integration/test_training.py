"""`stream-ae train` from a time range of the readings topic (real broker)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from harness import PERIOD_MS, STREAM_START, Env, simulator, stream_messages

from stream_ae.readings_io import read_topic, to_windows
from stream_ae.schemas import iso_ms
from stream_ae.simulate import CHANNELS
from stream_ae.training import grid_for_training, train

pytestmark = pytest.mark.integration


def test_train_on_a_topic_time_range_uses_only_that_range(env: Env, tmp_path: Path) -> None:
    settings = env.settings(
        window={"size": 32, "hop": 8}, train={"epochs": 2, "output_dir": tmp_path}
    )
    env.create_topics(settings)
    msgs = stream_messages(simulator(), 900)
    env.produce(settings, msgs)
    start, end = STREAM_START + 100 * PERIOD_MS, STREAM_START + 700 * PERIOD_MS

    readings, source = read_topic(settings, iso_ms(start), iso_ms(end), CHANNELS)
    assert readings.ts_ms.min() >= start
    assert readings.ts_ms.max() < end
    assert len(readings) == 600 * 6
    assert settings.topics.readings in source

    path, info = train(readings, settings, source=source)
    assert (path / "model.safetensors").is_file()
    # the same windows the scorer's windowing builds from those readings
    expected = to_windows(readings, grid_for_training(settings, len(CHANNELS)))
    assert info["windows"] == len(expected)
    assert np.isfinite(info["threshold"])
