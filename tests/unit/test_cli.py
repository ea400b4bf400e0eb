"""The command line: help, errors raised by commands, and main()'s one-line messages.

No broker: every case fails (on purpose) before Kafka would be contacted, and the
subprocess cases point Kafka at a closed port with one attempt, so a command that
did try to connect would fail fast rather than hang.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stream_ae import cli
from stream_ae.errors import ConfigError, DataError

STREAM_AE = Path(sys.executable).with_name("stream-ae")
runner = CliRunner()


@pytest.fixture(autouse=True)
def isolated(cli_state: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No STREAM_AE_* from the caller, no config file in cwd; CLI/global logging restored."""
    monkeypatch.chdir(tmp_path)


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["stream-ae", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    code = info.value.code
    assert isinstance(code, int)
    return code


# -- typer app (CliRunner) -------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    result = runner.invoke(cli.app, ["--help"])
    assert result.exit_code == 0
    for command in ("kafka", "topics", "simulate", "train", "score", "demo"):
        assert command in result.output


def test_score_help_lists_its_options() -> None:
    result = runner.invoke(cli.app, ["score", "--help"])
    assert result.exit_code == 0
    for option in ("--model", "--exactly-once", "--group-id", "--max-idle"):
        assert option in result.output


def test_train_needs_exactly_one_source() -> None:
    for args in (["train"], ["train", "--csv", "a.csv", "--from", "2025-01-01T00:00:00Z"]):
        result = runner.invoke(cli.app, args)
        assert isinstance(result.exception, DataError), result.output
        assert "exactly one source" in str(result.exception)


def test_set_override_reaches_the_settings(tmp_path: Path) -> None:
    result = runner.invoke(cli.app, ["--set", "window.hop=999", "train", "--csv", "x.csv"])
    assert isinstance(result.exception, ConfigError)
    assert "window.hop" in str(result.exception)


def test_train_reports_a_bad_csv_line(tmp_path: Path) -> None:
    f = tmp_path / "n.csv"
    f.write_text("timestamp,a\n0,1\n1000,oops\n")
    result = runner.invoke(cli.app, ["train", "--csv", str(f)])
    assert isinstance(result.exception, DataError)
    assert "line 3" in str(result.exception)


@pytest.mark.parametrize("command", ["train", "retrain"])
def test_train_and_retrain_read_parquet_via_input(tmp_path: Path, command: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "n.parquet"
    pq.write_table(pa.table({"timestamp": [0, 1000], "a": [1.0, float("inf")]}), f)
    result = runner.invoke(cli.app, [command, "--input", str(f)])
    assert isinstance(result.exception, DataError), result.output
    assert "n.parquet, row 2, column 'a'" in str(result.exception)


# -- bad input and unwritable outputs: errors naming the flag, before the work --------------


@pytest.mark.parametrize(
    ("start", "said"),
    [
        ("yesterday", "--from 'yesterday' is neither epoch milliseconds nor ISO-8601"),
        ("2026-11-26T00:00", "--from '2026-11-26T00:00' has no time zone; add 'Z'"),
    ],
)
def test_train_from_a_bad_time_names_the_flag(start: str, said: str) -> None:
    result = runner.invoke(cli.app, ["train", "--from", start, "--channels", "a"])
    assert isinstance(result.exception, ConfigError), result.output
    assert said in str(result.exception)


def test_simulate_csv_into_a_missing_folder_names_the_flag(tmp_path: Path) -> None:
    out = tmp_path / "missing" / "x.csv"
    result = runner.invoke(cli.app, ["simulate", "--csv", str(out), "--steps", "5"])
    assert isinstance(result.exception, ConfigError), result.output
    assert f"--csv {out}: cannot write there" in str(result.exception)
    assert f"the folder {out.parent} does not exist" in str(result.exception)


def tiny_model(tmp_path: Path) -> Path:
    from tiny_models import tiny_artifact

    from stream_ae.decide.threshold import ThresholdSpec

    return tiny_artifact(tmp_path / "models", threshold=ThresholdSpec("quantile", {}, 1.0))


def readings_csv(path: Path, rows: int, *, label: bool = True) -> Path:
    """``rows`` readings of tiny_model's channels, 100 ms apart (its sample period)."""
    head = "timestamp,temp,vibration" + (",anomaly" if label else "")
    lines = [f"{i * 100},{i % 5},{i % 3}" + (",0" if label else "") for i in range(rows)]
    path.write_text("\n".join([head, *lines]) + "\n")
    return path


def test_embed_out_into_a_missing_folder_names_the_flag(tmp_path: Path) -> None:
    model, data = tiny_model(tmp_path), readings_csv(tmp_path / "r.csv", 40)
    out = tmp_path / "missing" / "x.jsonl"
    result = runner.invoke(
        cli.app, ["embed", "--csv", str(data), "--model", str(model), "--out", str(out)]
    )
    assert isinstance(result.exception, ConfigError), result.output
    assert f"--out {out}: cannot write there" in str(result.exception)


def test_evaluate_report_that_cannot_be_written_fails_before_the_run(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for report in (blocker, blocker / "report"):
        # the model does not exist: had the run started, that would be the error
        result = runner.invoke(
            cli.app,
            ["evaluate", "--csv", "x.csv", "--model", "/nonexistent", "--report", str(report)],
        )
        assert isinstance(result.exception, ConfigError), result.output
        assert f"--report {report}" in str(result.exception)


@pytest.mark.parametrize("label_column", [None, "anomly"])
def test_evaluate_without_the_label_column_names_it_and_the_columns(
    tmp_path: Path, label_column: str | None
) -> None:
    model = tiny_model(tmp_path)
    data = readings_csv(tmp_path / "r.csv", 40, label=label_column is not None)
    args = ["evaluate", "--csv", str(data), "--model", str(model)]
    result = runner.invoke(
        cli.app, args + (["--label-column", label_column] if label_column else [])
    )
    assert isinstance(result.exception, DataError), result.output
    wanted = label_column or "anomaly"
    assert f"no label column {wanted!r} (columns found: timestamp, temp, vibration" in str(
        result.exception
    )


def test_evaluate_with_no_window_scored_says_why_instead_of_a_perfect_f1(tmp_path: Path) -> None:
    model = tiny_model(tmp_path)
    data = readings_csv(tmp_path / "short.csv", 10)  # the model's window is 16
    result = runner.invoke(cli.app, ["evaluate", "--csv", str(data), "--model", str(model)])
    assert isinstance(result.exception, DataError), result.output
    msg = str(result.exception)
    assert "0 windows were scored (10 rows;" in msg
    assert "fewer than the model's window of 16" in msg


# -- main(): StreamAEError -> one line on stderr, exit 2 --------------------------------------


def test_main_turns_errors_into_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(monkeypatch, "train") == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: give exactly one source: --csv FILE or --from TIME [--to TIME]"


def test_main_bad_set_item(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(monkeypatch, "--set", "window.size", "score") == 2
    err = capsys.readouterr().err
    assert "'window.size': expected SECTION.FIELD=VALUE" in err
    assert "Traceback" not in err


def test_main_missing_config_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.toml"
    assert run_main(monkeypatch, "--config", str(missing), "score") == 2
    assert f"settings file {missing} does not exist" in capsys.readouterr().err


def test_main_bad_log_level(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(monkeypatch, "--log-level", "verbose", "train") == 2
    assert "log_level" in capsys.readouterr().err


def test_main_kafka_client_settings_refused_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAM_AE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9")
    monkeypatch.setenv("STREAM_AE_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("STREAM_AE_KAFKA__SASL_MECHANISM", "FOO")
    assert run_main(monkeypatch, "topics", "create") == 2
    err = capsys.readouterr().err
    assert "kafka.sasl_mechanism (STREAM_AE_KAFKA__SASL_MECHANISM)" in err
    assert "[kafka] of the settings file" in err  # brackets kept, not read as rich markup
    assert "Traceback" not in err


# -- the installed console script ------------------------------------------------------------

CASES = {
    "invalid_setting": ("--set", "window.hop=999", "score"),
    "missing_csv": ("train", "--csv", "/nonexistent.csv"),
    "missing_model": ("score", "--model", "/nonexistent"),
}


@pytest.fixture(scope="module")
def console_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run every case at once (each pays the interpreter start-up, the model case torch's)."""
    cwd = tmp_path_factory.mktemp("cli")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_AE_")}
    env.update(
        STREAM_AE_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:1",
        STREAM_AE_KAFKA__CONNECT_ATTEMPTS="1",
        STREAM_AE_MODEL__LOAD_ATTEMPTS="1",
    )
    procs = {
        name: subprocess.Popen(
            [str(STREAM_AE), *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in CASES.items()
    }
    done = {}
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err = f"HUNG (killed after 60 s)\n{err}"
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


def one_clean_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ")
    return proc.stderr


def test_console_script_invalid_setting(
    console_runs: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    err = one_clean_error(console_runs["invalid_setting"])
    assert "window" in err
    assert "window.hop" in err


def test_console_script_missing_csv(
    console_runs: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    err = one_clean_error(console_runs["missing_csv"])
    assert "/nonexistent.csv" in err
    assert len(err.strip().splitlines()) == 1


def test_console_script_missing_model_fails_before_kafka(
    console_runs: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    err = one_clean_error(console_runs["missing_model"])
    assert "/nonexistent" in err
    assert "does not exist" in err
    assert "Kafka" not in err  # the model loads first; Kafka was never needed
