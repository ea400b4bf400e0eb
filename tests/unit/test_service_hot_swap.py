"""A refused hot swap is tried again (``ScorerService._follow_champion``): a model
still being copied or a passing I/O error must not leave the scorer on the old
model until the next announcement. No Kafka: the control topic is a stub, loading
is replaced, and the swap itself is recorded."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from tiny_models import unscored_binding

from stream_ae import schemas
from stream_ae import service as service_mod
from stream_ae.errors import ArtifactError
from stream_ae.model import artifact as artifact_mod
from stream_ae.service import SWAP_RETRIES, SWAP_RETRY_S, ScorerService
from stream_ae.settings import load_settings

SHA = "ab" * 32


class Watcher:
    """The control topic: the latest announcement, as ``ControlWatcher.latest`` gives it."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def latest(self, key: bytes) -> bytes | None:
        assert key == schemas.CHAMPION_KEY
        return self.raw


def _announcement(version: str, sha: str = SHA) -> bytes:
    ann = schemas.ModelAnnouncement(
        version=version, path=f"/models/{version}", weights_sha256=sha, announced_at=""
    )
    return schemas.encode(ann)


class Loader:
    """``load_artifact``: fails while ``failures`` lasts (each an exception), then loads."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls: list[str] = []

    def __call__(self, path: Any, **_kwargs: Any) -> Any:
        self.calls.append(str(path))
        if self.failures:
            raise self.failures.pop(0)
        version = str(path).rsplit("/", 1)[-1]
        return SimpleNamespace(metadata=SimpleNamespace(version=version, weights_sha256=SHA))


def _service(monkeypatch: pytest.MonkeyPatch, raw: bytes, loader: Loader) -> ScorerService:
    binding = unscored_binding()
    service = ScorerService(load_settings(), binding)
    service._watcher = Watcher(raw)  # type: ignore[assignment]
    monkeypatch.setattr(artifact_mod, "load_artifact", loader)
    monkeypatch.setattr(service_mod, "bind_model", lambda loaded, _s: loaded)
    swaps: list[tuple[str, str]] = []
    monkeypatch.setattr(service, "_swap", lambda _b, new, old: swaps.append((new, old)))
    service.swaps = swaps  # type: ignore[attr-defined]
    return service


def test_a_transient_refusal_is_tried_again_after_the_wait(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    loader = Loader(ArtifactError("/models/v2/model.safetensors is missing"))
    service = _service(monkeypatch, _announcement("v2"), loader)
    with caplog.at_level(logging.ERROR, logger="stream_ae.service"):
        service._follow_champion(0.0)
        service._follow_champion(SWAP_RETRY_S - 1)  # waiting: not tried, nothing logged
    assert len(loader.calls) == 1 and service.swaps == []  # type: ignore[attr-defined]
    (refusal,) = caplog.records
    assert "model v2 refused, v1 keeps serving: /models/v2/model.safetensors is missing" in (
        refusal.getMessage()
    )
    assert f"trying again in {SWAP_RETRY_S:g} s (1 of {SWAP_RETRIES} retries)" in (
        refusal.getMessage()
    )
    service._follow_champion(SWAP_RETRY_S)
    assert service.swaps == [("v2", "v1")]  # type: ignore[attr-defined]
    service._follow_champion(10 * SWAP_RETRY_S)  # dealt with: not loaded again
    assert len(loader.calls) == 2
    assert service.pipeline.metrics.model_swap_failures == 1


def test_a_lasting_refusal_gives_up_after_the_retries_until_a_new_announcement(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # the artifact's weights do not hash to the announced sha256: a partial copy, or not
    loader = Loader(*[ArtifactError("weights sha256 mismatch")] * (SWAP_RETRIES + 1))
    service = _service(monkeypatch, _announcement("v2"), loader)
    with caplog.at_level(logging.ERROR, logger="stream_ae.service"):
        for k in range(SWAP_RETRIES + 5):
            service._follow_champion(k * SWAP_RETRY_S)
    assert len(loader.calls) == SWAP_RETRIES + 1
    assert service.pipeline.metrics.model_swap_failures == SWAP_RETRIES + 1
    assert len(caplog.records) == SWAP_RETRIES + 1  # then quiet
    assert f"refused {SWAP_RETRIES + 1} times, not trying again" in caplog.records[-1].getMessage()
    assert "stream-ae models announce" in caplog.records[-1].getMessage()
    assert service.swaps == []  # type: ignore[attr-defined]
    service._watcher = Watcher(_announcement("v3"))  # type: ignore[assignment]
    service._follow_champion(1000 * SWAP_RETRY_S)  # a new announcement: tried at once
    assert service.swaps == [("v3", "v1")]  # type: ignore[attr-defined]


def test_a_new_announcement_is_tried_at_once_after_a_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The weights at the path are not the announced ones: refused; the announcement
    that follows (the right hash) does not wait for the retry."""
    loader = Loader()
    service = _service(monkeypatch, _announcement("v2", sha="cd" * 32), loader)
    service._follow_champion(0.0)
    assert service.pipeline.metrics.model_swap_failures == 1 and service.swaps == []  # type: ignore[attr-defined]
    service._watcher = Watcher(_announcement("v2"))  # type: ignore[assignment]
    service._follow_champion(1.0)  # another announcement: no wait
    assert service.swaps == [("v2", "v1")]  # type: ignore[attr-defined]


def test_an_unreadable_announcement_is_refused_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    loader = Loader()
    service = _service(monkeypatch, b"{not json", loader)
    with caplog.at_level(logging.ERROR, logger="stream_ae.service"):
        for k in range(3):
            service._follow_champion(k * SWAP_RETRY_S)
    (refusal,) = caplog.records
    assert "unreadable announcement" in refusal.getMessage()
    assert loader.calls == [] and service.pipeline.metrics.model_swap_failures == 1
