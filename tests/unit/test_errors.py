"""The exception hierarchy: one-line messages that name the thing and the reason, exit codes."""

from __future__ import annotations

import inspect

import pytest

from scribed import errors


def _error_classes() -> list[type[errors.ScribedError]]:
    return [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.ScribedError)]


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__name__)
def test_every_error_documents_itself_and_maps_to_an_exit_status(cls: type[errors.ScribedError]) -> None:
    assert cls.__doc__ and cls.__doc__.strip()
    assert cls.exit_code in (1, 2)


def test_exit_codes() -> None:
    assert errors.ScribedError("x").exit_code == 1
    assert errors.TranscriptionError("x").exit_code == 1
    assert errors.UsageError("x").exit_code == 2
    assert errors.ModelError("x").exit_code == 2
    assert errors.ConfigError(["p"]).exit_code == 2


def test_config_error_lists_every_problem_with_its_source() -> None:
    err = errors.ConfigError(["At 'a.b': expected x, got 1", "At 'c': unknown section"], "/etc/c.yaml")
    assert err.problems == ["At 'a.b': expected x, got 1", "At 'c': unknown section"]
    assert str(err) == ("2 configuration problem(s) in /etc/c.yaml:\n"
                        "  - At 'a.b': expected x, got 1\n  - At 'c': unknown section")
    assert str(errors.ConfigError(["p"])).startswith("1 configuration problem(s):\n")


def test_audio_error_names_file_and_reason() -> None:
    err = errors.AudioError("/in/a b.wav", "not an audio file")
    assert (err.path, err.reason) == ("/in/a b.wav", "not an audio file")
    assert str(err) == "cannot read audio '/in/a b.wav': not an audio file"


def test_network_blocked_is_an_os_error() -> None:
    # Library code that handles OSError from a socket keeps working when the guard refuses one.
    with pytest.raises(OSError):
        raise errors.NetworkBlockedError("refused")
