"""The daemon <-> worker messages: frozen, picklable, explicit outcomes, light imports."""

from __future__ import annotations

import ast
import dataclasses
import pickle
import sys
from pathlib import Path

import pytest

from scribed import protocol
from scribed.config import Config
from scribed.identity import FileIdentity
from scribed.protocol import (
    OUTCOMES,
    Fatal,
    Idle,
    JobOptions,
    Jobs,
    JobSpec,
    Progress,
    Ready,
    Result,
    Stop,
    Unloaded,
)

IDENT = FileIdentity(1, 2, 3, 4, "ab" * 32)
OPTIONS = JobOptions(language="zh", context="Team China", glossary={"ali": "Alibaba"}, speakers=2, timestamps=True)
SPEC = JobSpec(7, Path("/in/a.wav"), Path("/in"), IDENT, {"txt": Path("/out/a.txt")}, Path("/out/a.failed.txt"),
               OPTIONS, {"txt": FileIdentity(1, 9, 10, 11)}, Path("/out"))
MESSAGES = [Jobs((SPEC,)), OPTIONS, Stop(), Ready("m", "cpu", 1.5, 42), Progress(7, 1, 3),
            Result(7, "done", None, {"txt": FileIdentity(1, 9, 10, 11)}, 2.0, "en", 1), Idle(), Unloaded(),
            Fatal("model not found")]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_messages_are_frozen_and_cross_a_pipe_unchanged(message: object) -> None:
    assert dataclasses.is_dataclass(message)
    assert pickle.loads(pickle.dumps(message)) == message
    field = next(iter(dataclasses.fields(message)), None)  # type: ignore[arg-type]
    if field is not None:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(message, field.name, None)


def test_every_outcome_is_explicit() -> None:
    assert OUTCOMES == ("done", "retry", "final", "transient", "changed", "skipped")
    for outcome in OUTCOMES:
        assert Result(1, outcome).outcome == outcome  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown outcome 'cannot read audio'"):
        Result(1, "cannot read audio")  # type: ignore[arg-type]


def test_protocol_imports_only_the_standard_library_and_identity() -> None:
    imported: set[str] = set()
    for node in ast.walk(ast.parse(Path(protocol.__file__).read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    foreign = {m for m in imported if m.split(".")[0] not in sys.stdlib_module_names and m != "scribed.identity"}
    assert foreign == set() and "scribed.identity" in imported


def test_a_job_carries_its_own_options() -> None:
    assert pickle.loads(pickle.dumps(SPEC)).options == OPTIONS
    plain = JobSpec(1, Path("/in/b.wav"), Path("/in"), IDENT, {}, Path("/in/b.failed.txt"))
    assert plain.options == JobOptions() and plain.out_dir is None
    t = Config().transcription  # the defaults are the config's
    assert JobOptions() == JobOptions(t.language, t.context, dict(t.glossary), t.speakers, t.timestamps)
