"""The command line: parsing, flags checked as a config overlay, exit statuses, one-line errors."""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import pytest
from loguru import logger

from scribed import cli, logs
from scribed.config import Config, parse_config


@pytest.fixture(autouse=True)
def _restore_logging():
    yield
    logs.setup("INFO")  # main() reconfigures loguru; leave it as other tests expect


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"watch:\n  folders: [{tmp_path / 'in'}]\nservice:\n  state_dir: {tmp_path / 'state'}\n")
    return path


def _err_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


# -- flags are an overlay checked by the config rules --------------------------------------------------


@pytest.mark.parametrize(("flags", "problem"), [
    (["--batch-size", "0"], "At 'model.batch_size': expected an integer >= 1, got 0"),
    (["--language", "klingon"], "At 'transcription.language': expected a language the model knows"),
    (["--format", "txt,docx"], "At 'output.formats': item 1: expected one of txt, srt, vtt, json, got 'txt,docx'"),
    (["--device", "gpu"], "At 'model.device': expected auto, cpu, cuda or cuda:N, got 'gpu'"),
])  # fmt: skip
def test_bad_transcribe_flags_get_the_config_message(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], problem: str
) -> None:
    rec = tmp_path / "a.wav"
    rec.write_bytes(b"RIFF")
    assert cli.main(["transcribe", "-c", str(config_file), str(rec), *flags]) == 2
    lines = _err_lines(capsys)
    assert lines[0] == "scribed: 1 configuration problem(s) in command-line options:"
    assert lines[1].startswith(f"  - {problem}")


def test_bad_bench_flags_are_refused_before_the_bench_runs(config_file: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "scribed.tools.bench", None)  # reaching the import would be an error
    assert cli.main(["bench", "-c", str(config_file), "--batch-size", "0"]) == 2
    assert "At 'model.batch_size': expected an integer >= 1, got 0" in capsys.readouterr().err


def test_flags_map_to_config_keys(tmp_path: Path) -> None:
    args = cli._parser().parse_args(["transcribe", "x.wav", "--model", "m", "--language", "yue", "--format",
                                     "srt,txt", "--out", str(tmp_path), "--device", "cpu", "--batch-size", "2",
                                     "--timestamps"])  # fmt: skip
    assert cli._flags(args) == {
        "model": {"id": "m", "device": "cpu", "batch_size": 2},
        "transcription": {"language": "yue", "timestamps": True},
        "output": {"formats": "srt,txt", "dir": str(tmp_path)},
    }
    plain = cli._flags(cli._parser().parse_args(["transcribe", "x.wav"]))
    assert all(value is None for section in plain.values() for value in section.values())  # nothing given
    assert all(v is None for s in cli._flags(cli._parser().parse_args(["status"])).values() for v in s.values())


# -- log levels -------------------------------------------------------------------------------------


def _ns(verbose: int = 0, quiet: int = 0) -> argparse.Namespace:
    return argparse.Namespace(verbose=verbose, quiet=quiet)


@pytest.mark.parametrize("level", logs.LEVELS)
def test_configured_level_is_kept_without_flags(level: str) -> None:
    cfg = parse_config({"service": {"log_level": level}})
    assert cli._level(cfg, _ns()) == level


def test_verbose_and_quiet_step_along_the_one_list() -> None:
    cfg = Config()
    assert cli._level(cfg, _ns(verbose=1)) == "DEBUG"
    assert cli._level(cfg, _ns(verbose=5)) == "TRACE"
    assert cli._level(cfg, _ns(quiet=1)) == "SUCCESS"
    assert cli._level(cfg, _ns(quiet=9)) == "CRITICAL"
    critical = parse_config({"service": {"log_level": "CRITICAL"}})
    assert cli._level(critical, _ns(verbose=1)) == "ERROR"


def test_critical_config_silences_errors(config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    config_file.write_text(config_file.read_text() + "  log_level: CRITICAL\n")
    monkeypatch.setattr(cli, "_cmd_model", lambda args, cfg: logger.error("an error line") or 0)
    assert cli.main(["model", "list", "-c", str(config_file)]) == 0
    assert "an error line" not in capsys.readouterr().err
    assert cli.main(["model", "list", "-c", str(config_file), "-v"]) == 0  # CRITICAL -> ERROR
    assert "an error line" in capsys.readouterr().err


# -- exit statuses and error lines -------------------------------------------------------------------


def test_check_config_ok_and_missing_file(tmp_path: Path, config_file: Path, capsys) -> None:
    assert cli.main(["check-config", str(config_file)]) == 0
    assert capsys.readouterr().out.startswith(f"# {config_file}: OK")
    assert cli.main(["check-config", str(tmp_path / "nope.yaml")]) == 2
    (line, *_) = _err_lines(capsys)
    assert line.startswith("scribed: 1 configuration problem(s)") and "nope.yaml" in line


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["no-such-command"])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("scribed ")


def test_status_without_a_journal(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "-c", str(config_file)]) == 3
    assert "has not run yet" in capsys.readouterr().out


def test_missing_third_party_module_is_named(config_file: Path, capsys, monkeypatch) -> None:
    def needs_a_library(args: argparse.Namespace, cfg: Config) -> int:
        import scribed_test_absent_library  # noqa: F401 - the import is the point

        return 0

    monkeypatch.setattr(cli, "_cmd_model", needs_a_library)
    assert cli.main(["model", "list", "-c", str(config_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("scribed: model: cannot import the Python module 'scribed_test_absent_library'")
    assert "not available yet" not in err


def test_broken_scribed_import_is_a_bug_and_raises(config_file: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "scribed.daemon.status", None)  # as if the module failed to import
    with pytest.raises(ImportError) as err:
        cli.main(["status", "-c", str(config_file)])
    assert err.value.name == "scribed.daemon.status"


def test_interrupt_exits_130(config_file: Path, capsys, monkeypatch) -> None:
    def interrupted(args: argparse.Namespace, cfg: Config) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_model", interrupted)
    assert cli.main(["model", "list", "-c", str(config_file)]) == 130
    assert _err_lines(capsys) == ["scribed: interrupted"]


# -- retry ---------------------------------------------------------------------------------------------


@pytest.fixture
def fake_retry(monkeypatch) -> list[tuple[Config, list[Path], bool]]:
    calls: list[tuple[Config, list[Path], bool]] = []

    def retry_command(cfg: Config, paths: list[Path], failed: bool) -> int:
        calls.append((cfg, paths, failed))
        return 1

    module = types.ModuleType("scribed.daemon.retry")
    module.retry_command = retry_command  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "scribed.daemon.retry", module)
    return calls


def test_retry_passes_absolute_paths_and_failed(config_file: Path, tmp_path: Path, monkeypatch, fake_retry) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["retry", "-c", str(config_file), "in/a.wav", "~/b.m4a"]) == 1  # its status is passed on
    assert cli.main(["retry", "-c", str(config_file), "--failed"]) == 1
    (cfg, paths, failed), (_, none, everything) = fake_retry
    assert paths == [tmp_path / "in" / "a.wav", Path.home() / "b.m4a"] and failed is False
    assert none == [] and everything is True
    assert cfg.service.state_dir == tmp_path / "state"


def test_retry_usage_error_is_one_line(config_file: Path, capsys, monkeypatch) -> None:
    module = types.ModuleType("scribed.daemon.retry")

    def refuse(cfg: Config, paths: list[Path], failed: bool) -> int:
        raise cli.UsageError("name recordings or folders, or use --failed")

    module.retry_command = refuse  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "scribed.daemon.retry", module)
    assert cli.main(["retry", "-c", str(config_file)]) == 2
    assert _err_lines(capsys) == ["scribed: name recordings or folders, or use --failed"]


# -- every command: one `scribed:` line for a bad config; status flags; worker; transcribe --------------


@pytest.mark.parametrize("command", [
    ["transcribe", "x.wav"], ["run", "--once"], ["status"], ["status", "--json"], ["retry", "--failed"],
    ["model", "list"], ["model", "pull"], ["service", "unit"], ["service", "install"], ["bench", "--quick"],
    ["worker"], ["check-config"],
])  # fmt: skip
def test_every_command_says_scribed_first_for_a_bad_config(tmp_path: Path, capsys, command: list[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("watch:\n  folderz: [/x]\n")
    args = [*command, "-c", str(bad)] if command != ["check-config"] else ["check-config", str(bad)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("scribed: 1 configuration problem(s)") and "did you mean 'folders'" in err[1]


def test_status_follow_and_json_do_not_go_together(config_file: Path, capsys) -> None:
    assert cli.main(["status", "--follow", "--json", "-c", str(config_file)]) == 2
    assert _err_lines(capsys) == [
        "scribed: --follow and --json do not go together (for scripts: run --json repeatedly)"]


def test_worker_calls_the_cluster_worker(config_file: Path, monkeypatch) -> None:
    calls: list[Config] = []
    module = types.ModuleType("scribed.engine.cluster_worker")
    module.worker_command = lambda cfg: calls.append(cfg) or 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "scribed.engine.cluster_worker", module)
    assert cli.main(["worker", "-c", str(config_file)]) == 7
    assert calls[0].service.state_dir == config_file.parent / "state"


def test_worker_without_cluster_support_is_one_line(config_file: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "scribed.engine.cluster_worker", None)  # as if it were not installed
    assert cli.main(["worker", "-c", str(config_file)]) == 2
    assert _err_lines(capsys) == [
        "scribed: cluster mode is not part of this installation (no scribed.engine.cluster_worker)"]


def test_transcribe_names_each_missing_file(config_file: Path, tmp_path: Path, capsys) -> None:
    assert cli.main(["transcribe", "-c", str(config_file), str(tmp_path / "a.wav"), str(tmp_path / "b.wav")]) == 1
    assert _err_lines(capsys) == [f"scribed: no such file: {tmp_path / 'a.wav'}",
                                  f"scribed: no such file: {tmp_path / 'b.wav'}"]
