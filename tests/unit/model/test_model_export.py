"""Exported models (TorchScript, ONNX): export, verification, loading, tampering, CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch
import typer
from typer.testing import CliRunner

from stream_ae.cli import export_cmd
from stream_ae.decide.threshold import ThresholdSpec
from stream_ae.errors import ArtifactError, ConfigError
from stream_ae.model import export as export_mod
from stream_ae.model import runtimes
from stream_ae.model.artifact import TrainedModel, load_artifact, new_metadata, save_artifact
from stream_ae.model.export import export_model
from stream_ae.model.runtimes import (
    DEFAULT_TOLERANCES,
    EXPORTS_FILE,
    RuntimeScorer,
    load_runtime_scorer,
    strict_float32,
)
from stream_ae.model.scaler import ChannelScaler
from stream_ae.model.variants import build_variant_model

C, W = 3, 16
CHANNELS = ["temp", "vib", "pressure"]
HPARAMS = {"conv": {"hidden": 8, "latent": 4}, "lstm": {"hidden": 8, "latent": 4}}
F32 = DEFAULT_TOLERANCES["float32"]
RUNTIME_OF = {"torchscript": "torchscript", "onnx": "onnxruntime"}
HAS_CUDA = torch.cuda.is_available()


def _artifact(
    out_dir: Path,
    architecture: str = "conv",
    variant: str = "plain",
    variant_params: dict[str, int | float | str] | None = None,
    seed: int = 0,
) -> Path:
    torch.manual_seed(seed)
    hparams = HPARAMS[architecture]
    model = build_variant_model(architecture, C, W, hparams, variant, variant_params)
    scaler = ChannelScaler(mean=[20.0, 0.0, 6.0], std=[2.0, 0.5, 1.5])
    meta = new_metadata(
        model,
        architecture=architecture,
        hparams=hparams,
        channels=CHANNELS,
        sample_period_ms=100,
        window=W,
        hop=4,
        scaler=scaler,
        threshold=ThresholdSpec("quantile", {"q": 0.999}, 1.0),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        variant=variant,
        variant_params=variant_params,
    )
    return save_artifact(TrainedModel(model, scaler, meta), out_dir)


def _raw(n: int, seed: int = 5) -> npt.NDArray[np.float32]:
    """Raw windows around the scaler's mean, a few with a step on one channel."""
    rng = np.random.default_rng(seed)
    scaled = rng.standard_normal((n, C, W))
    scaled[::4, 1, W // 2 :] += 6.0
    mean = np.array([20.0, 0.0, 6.0])[:, None]
    std = np.array([2.0, 0.5, 1.5])[:, None]
    return (scaled * std + mean).astype(np.float32)


def _assert_same_scores(got: object, ref: object, tol: runtimes.Tolerance = F32) -> None:
    for field in ("scores", "channel_errors", "channel_shares"):
        a, b = getattr(got, field), getattr(ref, field)
        assert a.shape == b.shape and a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=tol.rtol, atol=tol.atol, err_msg=field)


@pytest.mark.parametrize(
    ("architecture", "variant", "params"),
    [
        ("conv", "plain", None),
        ("lstm", "plain", None),
        ("conv", "variational", {"mc_samples": 3, "mc_seed": 7}),
        ("lstm", "denoising", None),
    ],
)
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_and_load_give_eager_scores(
    tmp_path: Path,
    architecture: str,
    variant: str,
    params: dict[str, int | float | str] | None,
    fmt: str,
) -> None:
    vdir = _artifact(tmp_path, architecture, variant, params)
    result = export_model(vdir, fmt, exporter="legacy")

    assert result.path.is_file() and result.path.parent == vdir
    rec = result.record
    assert rec.check.passed and rec.check.n_windows == 160
    assert rec.check.batch_sizes == [1, 7, 64, 88]
    assert rec.tolerance == F32
    assert rec.mc_samples == (3 if variant == "variational" else 0)
    assert (rec.opset is not None) == (fmt == "onnx")
    manifest = json.loads((vdir / EXPORTS_FILE).read_text())
    assert manifest["weights_sha256"] == load_artifact(vdir, device="cpu").metadata.weights_sha256
    assert manifest["exports"][fmt]["sha256"] == rec.sha256
    assert not [p for p in vdir.iterdir() if p.name.startswith(".tmp")]

    eager = load_artifact(vdir, device="cpu").scorer
    loaded = load_artifact(vdir, device="cpu", runtime=RUNTIME_OF[fmt])
    scorer = loaded.scorer
    assert isinstance(scorer, RuntimeScorer)
    assert scorer.runtime == RUNTIME_OF[fmt] and scorer.precision == "float32"
    assert scorer.export is not None and scorer.export.sha256 == rec.sha256
    assert scorer.scaler.n_channels == C
    windows = _raw(33)
    for batch in (windows[:1], windows):  # dynamic batch: B=1 and B=33 through one export
        _assert_same_scores(scorer.score(batch), eager.score(batch))
    assert len(scorer.score(np.empty((0, C, W), np.float32))) == 0


def test_dynamo_exporter_and_chunking(tmp_path: Path) -> None:
    """The default ONNX exporter (torch.export-based) on the conv and the LSTM model."""
    for architecture, variant, params in (
        ("conv", "plain", None),
        ("lstm", "variational", {"mc_samples": 2}),
    ):
        vdir = _artifact(tmp_path / architecture, architecture, variant, params)
        rec = export_model(vdir, "onnx", held_out=_raw(5)).record  # exporter auto: dynamo first
        assert rec.exporter == "torch.onnx.export(dynamo=True)"
        assert rec.opset == export_mod.DEFAULT_OPSET
        assert rec.check.n_windows == 165
        scorer = load_runtime_scorer(vdir, "onnxruntime", "cpu", max_batch=4)
        eager = load_artifact(vdir, device="cpu").scorer
        _assert_same_scores(scorer.score(_raw(10)), eager.score(_raw(10)))


def test_both_formats_share_one_manifest(tmp_path: Path) -> None:
    vdir = _artifact(tmp_path)
    export_model(vdir, "torchscript")
    export_model(vdir, "onnx", exporter="legacy")
    manifest = json.loads((vdir / EXPORTS_FILE).read_text())
    assert sorted(manifest["exports"]) == ["onnx", "torchscript"]
    assert {p.name for p in vdir.iterdir() if not p.name.startswith(".")} == {
        "metadata.json",
        "model.safetensors",
        "exports.json",
        "model.onnx",
        "model.torchscript.pt",
    }


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_tampered_export_is_refused(tmp_path: Path, fmt: str) -> None:
    vdir = _artifact(tmp_path)
    path = export_model(vdir, fmt, exporter="legacy").path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256 mismatch") as info:
        load_artifact(vdir, device="cpu", runtime=RUNTIME_OF[fmt])
    assert "stream-ae export" in str(info.value)


def test_missing_export_names_the_command(tmp_path: Path) -> None:
    vdir = _artifact(tmp_path)
    with pytest.raises(ArtifactError, match="no onnx export") as info:
        load_artifact(vdir, device="cpu", runtime="onnxruntime")
    assert f"stream-ae export {vdir} --format onnx" in str(info.value)

    export_model(vdir, "torchscript")  # a manifest without the onnx entry
    with pytest.raises(ArtifactError, match="no onnx export"):
        load_artifact(vdir, device="cpu", runtime="onnxruntime")
    (vdir / "model.torchscript.pt").unlink()  # entry without its file
    with pytest.raises(ArtifactError, match="is missing") as info:
        load_artifact(vdir, device="cpu", runtime="torchscript")
    assert "--format torchscript" in str(info.value)


def test_export_of_other_weights_is_refused(tmp_path: Path) -> None:
    vdir = _artifact(tmp_path)
    export_model(vdir, "torchscript")
    manifest = json.loads((vdir / EXPORTS_FILE).read_text())
    manifest["weights_sha256"] = "0" * 64
    (vdir / EXPORTS_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="other weights"):
        load_artifact(vdir, device="cpu", runtime="torchscript")
    # re-exporting replaces the stale manifest
    export_model(vdir, "torchscript")
    assert isinstance(
        load_artifact(vdir, device="cpu", runtime="torchscript").scorer, RuntimeScorer
    )


def test_export_beyond_tolerance_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vdir = _artifact(tmp_path)
    real = export_mod.eager_errors
    monkeypatch.setattr(
        export_mod, "eager_errors", lambda model, scaled: real(model, scaled) * np.float32(1.001)
    )
    with pytest.raises(ArtifactError, match="differs from eager torch") as info:
        export_model(vdir, "torchscript")
    assert "nothing was written" in str(info.value)
    assert sorted(p.name for p in vdir.iterdir() if not p.name.startswith(".exports.lock")) == [
        "metadata.json",
        "model.safetensors",
    ]
    # a looser tolerance accepts the same difference, and records it
    rec = export_model(vdir, "torchscript", rtol=2e-3).record
    assert rec.tolerance.rtol == 2e-3
    assert 9e-4 < rec.check.max_rel_diff_scores < 1.1e-3


def test_load_time_self_check_catches_a_diverging_export(tmp_path: Path) -> None:
    """An export whose hash is right but which computes something else (e.g. traced from
    other weights and re-recorded) fails the self-check at load."""
    vdir = _artifact(tmp_path, seed=0)
    other = _artifact(tmp_path / "other", seed=1)
    export_model(vdir, "torchscript")
    rec = export_model(other, "torchscript").record
    (vdir / "model.torchscript.pt").write_bytes((other / "model.torchscript.pt").read_bytes())
    manifest = json.loads((vdir / EXPORTS_FILE).read_text())
    manifest["exports"]["torchscript"]["sha256"] = rec.sha256
    (vdir / EXPORTS_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="does not reproduce the eager model"):
        load_artifact(vdir, device="cpu", runtime="torchscript")


def test_bad_choices(tmp_path: Path) -> None:
    vdir = _artifact(tmp_path)
    with pytest.raises(ConfigError, match="unknown runtime"):
        load_artifact(vdir, device="cpu", runtime="tensorrt")
    with pytest.raises(ConfigError, match="unknown precision"):
        load_artifact(vdir, device="cpu", precision="int8")
    with pytest.raises(ConfigError, match="unknown export format"):
        export_model(vdir, "tflite")
    with pytest.raises(ConfigError, match="unknown ONNX exporter"):
        export_model(vdir, "onnx", exporter="magic")
    with pytest.raises(ConfigError, match="invalid tolerance"):
        export_model(vdir, "onnx", rtol=-1.0)
    # the default runtime is the plain eager scorer
    assert type(load_artifact(vdir, device="cpu").scorer).__name__ == "Scorer"


@pytest.mark.skipif(HAS_CUDA, reason="checks the refusal on a machine without CUDA")
def test_half_precision_needs_cuda(tmp_path: Path) -> None:
    vdir = _artifact(tmp_path)
    with pytest.raises(ConfigError, match="CUDA"):
        export_model(vdir, "torchscript", half=True)
    with pytest.raises(ConfigError, match="CUDA"):
        export_model(vdir, "onnx", half=True, device="cpu")
    with pytest.raises(ConfigError, match="CUDA"):
        load_artifact(vdir, device="cpu", runtime="torchscript", precision="float16")


def test_half_precision_path_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The float16 code path, run on the CPU (torch has float16 CPU kernels) with the
    CUDA-only policy lifted; on CUDA the same path runs for real (test below)."""
    monkeypatch.setattr(runtimes, "check_half_supported", lambda device, fmt: None)
    vdir = _artifact(tmp_path, "conv")
    rec = export_model(vdir, "torchscript", half=True, device="cpu").record
    assert rec.precision == "float16" and rec.file == "model.fp16.torchscript.pt"
    assert rec.tolerance == DEFAULT_TOLERANCES["float16"] and rec.check.passed
    eager = load_artifact(vdir, device="cpu").scorer
    windows = _raw(9)
    for runtime in ("torchscript", "torch"):
        scorer = load_artifact(vdir, device="cpu", runtime=runtime, precision="float16").scorer
        assert scorer.precision == "float16"
        _assert_same_scores(scorer.score(windows), eager.score(windows), rec.tolerance)
    # float32 and float16 exports live side by side
    export_model(vdir, "torchscript")
    assert sorted(json.loads((vdir / EXPORTS_FILE).read_text())["exports"]) == [
        "torchscript",
        "torchscript-fp16",
    ]
    # the Monte-Carlo path of a variational LSTM in float16
    vdir = _artifact(tmp_path / "vae", "lstm", "variational", {"mc_samples": 2})
    rec = export_model(vdir, "torchscript", half=True, device="cpu").record
    assert rec.mc_samples == 2 and rec.check.passed
    scorer = load_artifact(vdir, device="cpu", runtime="torchscript", precision="float16").scorer
    eager = load_artifact(vdir, device="cpu").scorer
    _assert_same_scores(scorer.score(windows), eager.score(windows), rec.tolerance)


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("architecture", ["conv", "lstm"])
def test_cuda_float32_and_half(tmp_path: Path, architecture: str) -> None:
    """Exports traced and checked on CUDA, loaded and scored there (ONNX runs on
    ONNX Runtime's CUDA provider where onnxruntime-gpu is installed, else on the CPU;
    float16 ONNX only with the CUDA provider)."""
    vdir = _artifact(tmp_path, architecture)
    eager = load_artifact(vdir, device="cuda").scorer
    windows = _raw(33)
    cases = [("torchscript", False), ("torchscript", True), ("onnx", False)]
    if "CUDAExecutionProvider" in runtimes._ort().get_available_providers():
        cases.append(("onnx", True))
    with strict_float32():  # compare float32 math, not TF32 (see runtimes.strict_float32)
        expected = eager.score(windows)
        for fmt, half in cases:
            rec = export_model(vdir, fmt, half=half, device="cuda").record
            assert rec.check.passed and rec.check.device.startswith("cuda")
            precision = "float16" if half else "float32"
            scorer = load_artifact(
                vdir, device="cuda", runtime=RUNTIME_OF[fmt], precision=precision
            ).scorer
            assert str(scorer.device).startswith("cuda")
            _assert_same_scores(scorer.score(windows), expected, rec.tolerance)
        half_eager = load_artifact(vdir, device="cuda", runtime="torch", precision="float16").scorer
        _assert_same_scores(half_eager.score(windows), expected, DEFAULT_TOLERANCES["float16"])


def test_cli_export(tmp_path: Path) -> None:
    app = typer.Typer()
    export_cmd.register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command, so typer keeps `export` as a subcommand
        """Nothing."""

    vdir = _artifact(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["export", str(vdir), "--format", "onnx", "--exporter", "legacy"])
    assert res.exit_code == 0, res.output
    assert "model.onnx" in res.output and "max |diff|" in res.output
    assert "onnxruntime" in res.output  # how to use it
    res = runner.invoke(app, ["export", str(vdir), "--format", "torchscript", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["record"]["format"] == "torchscript" and out["record"]["check"]["n_windows"] == 160
    res = runner.invoke(app, ["export", str(vdir), "--format", "tflite"])
    assert isinstance(res.exception, ConfigError)
