"""One real Apache Kafka broker for the whole session, and a small trained model.

The broker runs from the project's own set-up (`stream_ae.io.local_broker`) on
free ports in a temporary folder, and is stopped at the end. Besides its PLAINTEXT
listener it opens a SASL_PLAINTEXT one (PLAIN, user ``SASL_USER``, password
``SASL_PASSWORD`` of harness.py) for the tests of the SASL settings. If it cannot
start, every integration test errors: nothing here skips. ``STREAM_AE_TEST_BOOTSTRAP``
points the tests at an already running broker instead (the SASL tests then start
the private one all the same).
"""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import (
    _START,
    N_ASSETS,
    PERIOD_MS,
    SASL_PASSWORD,
    SASL_USER,
    SEED,
    TRAIN_STEPS,
    Env,
    H,
    W,
)

from stream_ae.io import local_broker
from stream_ae.readings_io import readings_from_arrays
from stream_ae.settings import load_settings
from stream_ae.simulate import Simulator


@pytest.fixture(scope="session")
def local_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_broker.BrokerInfo]:
    """The project's own broker on free ports, with a SASL/PLAIN listener too."""
    cfg = local_broker.BrokerConfig(
        state_dir=tmp_path_factory.mktemp("broker"),
        port=local_broker.free_port(),
        controller_port=local_broker.free_port(),
        sasl_port=local_broker.free_port(),
        sasl_users={SASL_USER: SASL_PASSWORD},
    )
    info = local_broker.start(cfg, timeout_s=120)
    try:
        yield info
    finally:
        # Clients the tests dropped but that sit in reference cycles go now, while the
        # broker still answers: at exit they would fill the log with refused connects.
        gc.collect()
        local_broker.stop(cfg, wipe=True)


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> str:
    """``host:port`` of the PLAINTEXT listener the tests use."""
    given = os.environ.get("STREAM_AE_TEST_BOOTSTRAP")
    if given:
        return given
    info: local_broker.BrokerInfo = request.getfixturevalue("local_kafka")
    return info.bootstrap


@pytest.fixture(scope="session")
def sasl_bootstrap(local_kafka: local_broker.BrokerInfo) -> str:
    """``host:port`` of the session broker's SASL_PLAINTEXT listener (mechanism PLAIN,
    user ``SASL_USER`` with ``SASL_PASSWORD``)."""
    assert local_kafka.sasl_bootstrap is not None
    return local_kafka.sasl_bootstrap


def train_fleet_model(
    out_dir: Path,
    *,
    seed: int,
    window: int,
    hop: int,
    epochs: int,
    decide: dict[str, int] | None = None,
) -> Path:
    """A conv autoencoder trained on the fleet's normal operation (``decide``: the
    decision rule it records, e.g. persistence)."""
    from stream_ae.training import train

    settings = load_settings(
        flags={
            "window": {"size": window, "hop": hop, "sample_period_ms": PERIOD_MS},
            "train": {"epochs": epochs, "seed": seed},
            "model": {"device": "cpu"},
            "decide": decide or {},
        }
    )
    sim = Simulator(N_ASSETS, seed=SEED, sample_period_ms=PERIOD_MS, start_ts_ms=_START)
    block = sim.step_block(TRAIN_STEPS)
    readings = readings_from_arrays(
        block.asset_ids, block.reading_ts_ms, block.values, block.present, list(block.channels)
    )
    path, _info = train(readings, settings, source="simulator", out_dir=out_dir)
    return path


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_fleet_model(
        tmp_path_factory.mktemp("artifacts"), seed=0, window=W, hop=H, epochs=12
    )


@pytest.fixture(scope="session")
def persistent_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model, recording 2-of-3 persistence as its decision rule."""
    return train_fleet_model(
        tmp_path_factory.mktemp("artifacts"),
        seed=0,
        window=W,
        hop=H,
        epochs=12,
        decide={"persistence_k": 2, "persistence_n": 3},
    )


@pytest.fixture
def env(kafka_bootstrap: str, model_path: Path) -> Env:
    return Env(kafka_bootstrap, model_path, f"t{uuid.uuid4().hex[:10]}")
