"""Scoring a window by its newest time steps (``train.score_tail``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stream_ae.errors import ArtifactError, ConfigError
from stream_ae.model.artifact import load_artifact, save_artifact
from stream_ae.model.autoencoders import tail_errors
from stream_ae.model.export import export_model
from stream_ae.model.runtimes import ChannelErrorsModule, load_runtime_scorer
from stream_ae.model.scorer import reconstruction_errors
from stream_ae.model.train import fit_autoencoder
from stream_ae.model.variants import build_variant_model

CHANNELS = ["a", "b", "c"]
C, W, HOP, TAIL = 3, 16, 2, 4


def _windows(n_steps: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n_steps)
    x = np.stack(
        [np.sin(2 * np.pi * t / 20), np.cos(2 * np.pi * t / 13), 0.3 * rng.standard_normal(n_steps)]
    ).astype(np.float32)
    return np.stack([x[:, s : s + W] for s in range(0, n_steps - W + 1, HOP)])


def _fit(score_tail: int, variant: str = "plain", **params: int) -> object:
    return fit_autoencoder(
        _windows(1200, 0),
        architecture="conv",
        channels=CHANNELS,
        sample_period_ms=1000,
        hop=HOP,
        hparams={"hidden": 8, "latent": 4},
        epochs=3,
        batch_size=32,
        seed=0,
        device="cpu",
        variant=variant,
        variant_params=params,
        score_tail=score_tail,
        error_norm="holdout",
    )


def test_tail_errors_is_the_mean_over_the_newest_steps() -> None:
    recon = torch.zeros(2, C, W)
    x = torch.zeros(2, C, W)
    x[0, 1, :4] = 3.0  # an error in the oldest steps only
    x[1, 2, -2:] = 2.0  # and one in the newest two
    whole = tail_errors(recon, x)
    tail = tail_errors(recon, x, TAIL)
    assert whole[0, 1] == pytest.approx(4 * 9 / W) and tail[0, 1] == 0.0
    assert whole[1, 2] == pytest.approx(2 * 4 / W) and tail[1, 2] == pytest.approx(2 * 4 / TAIL)
    assert tail.shape == (2, C)


@pytest.mark.parametrize(
    ("variant", "params"),
    [("plain", {}), ("variational", {"mc_samples": 0}), ("variational", {"mc_samples": 2})],
)
def test_models_score_only_their_tail(variant: str, params: dict[str, int]) -> None:
    torch.manual_seed(0)
    model = build_variant_model("conv", C, W, {"hidden": 8, "latent": 4}, variant, params).eval()
    x = torch.randn(5, C, W)
    with torch.inference_mode():
        whole = reconstruction_errors(model, x)
        model.score_tail = TAIL
        tail = reconstruction_errors(model, x)
    if not params.get("mc_samples"):  # one deterministic reconstruction
        with torch.inference_mode():
            direct = (model(x) - x)[..., -TAIL:].square().mean(2)
        torch.testing.assert_close(tail, direct)
    assert not torch.allclose(whole, tail)
    with torch.inference_mode():  # an export computes the same
        module = ChannelErrorsModule(model)
        torch.testing.assert_close(module(x), tail)


def test_training_records_the_tail_and_calibrates_on_it(tmp_path: Path) -> None:
    trained = _fit(TAIL)
    assert trained.metadata.score_tail == TAIL  # type: ignore[attr-defined]
    assert trained.metadata.training["score_tail"] == TAIL  # type: ignore[attr-defined]
    vdir = save_artifact(trained, tmp_path)  # type: ignore[arg-type]
    loaded = load_artifact(vdir, device="cpu")
    assert loaded.model.score_tail == TAIL
    # the threshold is the quantile of the held-out windows' tail scores
    meta = loaded.metadata
    windows = _windows(1200, 0)
    held_out = windows[len(windows) - meta.training["n_holdout"] :]
    scores = loaded.scorer.score(held_out).scores
    assert meta.metrics["holdout_score_max"] == pytest.approx(float(scores.max()), rel=1e-5)
    # ... and error_norm's per-channel scale is the held-out tail errors' mean
    scaler = loaded.scorer.scaler
    x = torch.from_numpy(scaler.transform(held_out))
    with torch.inference_mode():
        tail_err = (loaded.model(x) - x)[..., -TAIL:].square().mean(2).numpy()
    np.testing.assert_allclose(scaler.error_scale, tail_err.mean(0), rtol=1e-5)
    whole = _fit(0)
    assert whole.metadata.score_tail == 0  # type: ignore[attr-defined]
    # same training (the tail is applied only after it), another score
    assert whole.metadata.weights_sha256 == meta.weights_sha256  # type: ignore[attr-defined]
    assert whole.metadata.metrics["threshold"] != pytest.approx(meta.metrics["threshold"])  # type: ignore[attr-defined]


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exports_carry_the_tail(tmp_path: Path, fmt: str) -> None:
    vdir = save_artifact(_fit(TAIL, "variational", mc_samples=2), tmp_path)  # type: ignore[arg-type]
    export_model(vdir, fmt, device="cpu")
    runtime = {"torchscript": "torchscript", "onnx": "onnxruntime"}[fmt]
    eager = load_artifact(vdir, device="cpu").scorer
    scorer = load_runtime_scorer(vdir, runtime, "cpu")
    raw = _windows(300, 3)
    np.testing.assert_allclose(scorer.score(raw).scores, eager.score(raw).scores, rtol=1e-4)
    manifest = json.loads((vdir / "exports.json").read_text())
    assert [e["score_tail"] for e in manifest["exports"].values()] == [TAIL]
    # an export and an artifact that disagree (metadata.json edited) are refused by name
    meta_path = vdir / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["score_tail"] = TAIL + 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=rf"scores the newest {TAIL} time steps of each "):
        load_runtime_scorer(vdir, runtime, "cpu")


def test_an_export_without_a_tail_does_not_name_one(tmp_path: Path) -> None:
    """Scorers from before the field refuse unknown keys in exports.json."""
    vdir = save_artifact(_fit(0), tmp_path)  # type: ignore[arg-type]
    export_model(vdir, "torchscript", device="cpu")
    (record,) = json.loads((vdir / "exports.json").read_text())["exports"].values()
    assert "score_tail" not in record
    load_runtime_scorer(vdir, "torchscript", "cpu")


def test_a_tail_longer_than_the_window_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"score_tail=17 is longer than the window \(16"):
        _fit(W + 1)
    with pytest.raises(ConfigError, match="whole number"):
        _fit(-1)
    vdir = save_artifact(_fit(TAIL), tmp_path)  # type: ignore[arg-type]
    meta_path = vdir / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["score_tail"] = W + 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="score_tail 17 is longer than the window"):
        load_artifact(vdir, device="cpu")


def test_metadata_names_a_tail_only_when_there_is_one(tmp_path: Path) -> None:
    """Without a tail the file has no score_tail (older scorers can read it), and
    reads as the whole window."""
    vdir = save_artifact(_fit(0), tmp_path / "whole")  # type: ignore[arg-type]
    assert "score_tail" not in json.loads((vdir / "metadata.json").read_text())
    loaded = load_artifact(vdir, device="cpu")
    assert loaded.metadata.score_tail == 0 and loaded.model.score_tail == 0
    vdir = save_artifact(_fit(TAIL), tmp_path / "tail")  # type: ignore[arg-type]
    assert json.loads((vdir / "metadata.json").read_text())["score_tail"] == TAIL


def test_the_half_precision_path_scores_the_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """float16 (run on the CPU with the CUDA-only policy lifted, as in
    test_model_export) computes the tail too: within float16's tolerance of the
    float32 tail scores, and far from the whole-window ones."""
    from stream_ae.model import runtimes

    monkeypatch.setattr(runtimes, "check_half_supported", lambda device, fmt: None)
    raw = _windows(300, 3)
    for variant, params in (("plain", {}), ("variational", {"mc_samples": 2})):
        vdir = save_artifact(_fit(TAIL, variant, **params), tmp_path / variant)  # type: ignore[arg-type]
        eager = load_artifact(vdir, device="cpu").scorer
        half = load_artifact(vdir, device="cpu", runtime="torch", precision="float16").scorer
        ref, got = eager.score(raw).channel_errors, half.score(raw).channel_errors
        np.testing.assert_allclose(got, ref, rtol=1e-2, atol=1e-4)
        export_model(vdir, "torchscript", half=True, device="cpu")
        ts = load_runtime_scorer(vdir, "torchscript", "cpu", precision="float16")
        np.testing.assert_allclose(ts.score(raw).channel_errors, ref, rtol=1e-2, atol=1e-4)
        eager.model.score_tail = 0
        whole = eager.score(raw).channel_errors
        assert not np.allclose(got, whole, rtol=1e-2, atol=1e-4)


def test_the_train_command_takes_the_tail_from_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_state: None
) -> None:
    from typer.testing import CliRunner

    from stream_ae import cli
    from stream_ae.simulate import Simulator, write_csv

    monkeypatch.chdir(tmp_path)
    sim = Simulator(1, seed=3, start_ts_ms=1_764_000_000_000)
    write_csv(tmp_path / "normal.csv", [sim.step_block(1200)])
    base = ["--set", "window.size=16", "--set", "window.hop=4", "--set", "train.epochs=1"]
    base += ["--set", "train.output_dir=art"]
    result = CliRunner().invoke(
        cli.app, [*base, "--set", "train.score_tail=4", "train", "--csv", "normal.csv"]
    )
    assert result.exit_code == 0, result.output
    [vdir] = [p for p in (tmp_path / "art").iterdir() if p.is_dir()]
    assert load_artifact(vdir, device="cpu").metadata.score_tail == 4
    result = CliRunner().invoke(
        cli.app, [*base, "--set", "train.score_tail=17", "train", "--csv", "normal.csv"]
    )
    assert isinstance(result.exception, ConfigError)
    assert "train.score_tail" in str(result.exception) and "window.size" in str(result.exception)


@pytest.mark.usefixtures("cli_state")
def test_evaluate_refuses_tail_options_it_would_ignore_or_that_cannot_fit() -> None:
    from typer.testing import CliRunner

    from stream_ae import cli

    result = CliRunner().invoke(
        cli.app, ["evaluate", "--protocol", "skab-causal", "--window", "20", "--score-tail", "21"]
    )
    assert isinstance(result.exception, ConfigError), result.output
    assert "--score-tail 21 is longer than the window (--window 20)" in str(result.exception)
    result = CliRunner().invoke(
        cli.app,
        [
            "evaluate",
            "--csv",
            "x.csv",
            "--model",
            "m",
            "--score-tail",
            "5",
            "--error-norm",
            "holdout",
        ],
    )
    assert isinstance(result.exception, ConfigError), result.output
    assert "--error-norm, --score-tail only apply to the SKAB protocols" in str(result.exception)
