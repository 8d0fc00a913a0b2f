"""Tests for scribed.wire: the cluster's JSON messages and key names."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from scribed import wire
from scribed.identity import FileIdentity
from scribed.protocol import JobOptions, JobSpec, Result

COORD = "0123456789abcdef"
IDENT = FileIdentity(64769, 1234, 4096, 1_700_000_000_123_456_789, "ab" * 32)


def spec(job_id: int = 7, name: str = "talk.m4a", **kw: object) -> JobSpec:
    root = Path("/srv/share/inbox")
    fields: dict = dict(job_id=job_id, path=root / name, root=root, identity=IDENT,
                        outputs={"txt": root / "talk.txt", "srt": root / "talk.srt"},
                        failure_note=root / "talk.failed.txt",
                        options=JobOptions(language="zh", context="Q3 planning", glossary={"kube": "Kubernetes"},
                                           speakers=2, timestamps=True),
                        replaceable={"txt": FileIdentity(1, 2, 3, 4, None)}, out_dir=None)
    fields.update(kw)
    return JobSpec(**fields)


def key(job_id: int = 7, gen: int = 0) -> str:
    return wire.job_key(COORD, job_id, gen, IDENT)


def roundtrip(payload: dict) -> wire.Task:
    return wire.decode_task(json.loads(json.dumps(payload)))  # as it crosses the broker


def test_a_task_crosses_as_json_and_back() -> None:
    jobs = [(key(7), spec(7)), (key(8), spec(8, out_dir=Path("/srv/share/transcripts")))]
    task = roundtrip(wire.encode_task(COORD, jobs))
    assert task.coordinator == COORD and task.unreadable == () and task.skipped == 0
    assert list(task.jobs) == jobs


def test_undecodable_file_names_survive() -> None:
    odd = os.fsdecode(b"caf\xe9 meeting.wav")  # Latin-1 bytes: not UTF-8
    task = roundtrip(wire.encode_task(COORD, [(key(), spec(name=odd))]))
    assert os.fsencode(task.jobs[0][1].path) == b"/srv/share/inbox/caf\xe9 meeting.wav"


def test_job_key_changes_with_generation_and_content_only() -> None:
    assert key(7, 0) == key(7, 0)
    assert len({key(7, 0), key(7, 1), key(8, 0), wire.job_key(COORD, 7, 0, FileIdentity(1, 2, 3, 4, "cd" * 32))}) == 4
    assert key(7, 0).startswith(COORD + "-7-0-")


def test_keys_live_under_the_queue_prefix() -> None:
    keys = wire.Keys("team")
    names = [keys.result("k"), keys.claim("k"), keys.attempt("k"), keys.progress("k"), keys.gen(COORD, 3),
             keys.wake(COORD), keys.workers, keys.worker("w")]
    assert all(n.startswith("scribed:team:") for n in names)
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("damage", [
    lambda p: p.update(v=2),
    lambda p: p.update(coordinator="../../etc"),
    lambda p: p.update(jobs="all of them"),
    lambda p: p.pop("coordinator"),
])
def test_a_message_that_is_not_ours_is_refused(damage) -> None:
    payload = wire.encode_task(COORD, [(key(), spec())])
    damage(payload)
    with pytest.raises(wire.WireError):
        roundtrip(payload)


@pytest.mark.parametrize("field, value", [
    ("path", "relative/talk.m4a"), ("path", "/a/\0b"),
    ("identity", [1, 2, 3, 4]), ("identity", [1, 2, 3, True, None]), ("outputs", {"txt": 5}),
    ("timestamps_missing", None), ("options", {"language": "en", "shell": "rm -rf /"}),
    ("options", {"glossary": {"a": 1}}), ("options", {"context": ["x"]}), ("out_dir", "nowhere"),
])
def test_a_malformed_job_is_answered_by_its_key(field: str, value: object) -> None:
    payload = wire.encode_task(COORD, [(key(7), spec(7)), (key(8), spec(8))])
    job = payload["jobs"][0]
    if field == "timestamps_missing":
        del job["options"]
    else:
        job[field] = value
    task = roundtrip(payload)
    assert [k for k, _ in task.jobs] == [key(8)]
    assert [(k, i) for k, i, _ in task.unreadable] == [(key(7), 7)]


@pytest.mark.parametrize("field, value", [
    ("key", "ffffffffffffffff-7-0-ab"),  # another coordinator's key: never answered from here
    ("key", "scribed:*"), ("job_id", True), ("job_id", "7"),
])
def test_a_job_without_a_usable_key_or_id_is_only_counted(field: str, value: object) -> None:
    payload = wire.encode_task(COORD, [(key(7), spec(7))])
    bad = copy.deepcopy(payload["jobs"][0])
    bad[field] = value
    bad["path"] = 3
    payload["jobs"].append(bad)
    task = roundtrip(payload)
    assert len(task.jobs) == 1 and task.unreadable == () and task.skipped == 1


def test_a_result_crosses_and_back() -> None:
    result = Result(7, "done", None, {"txt": IDENT}, 12.5, "Chinese", 1)
    assert wire.decode_result(wire.encode_result(result, "scribed-42@gpu1")) == (result, "scribed-42@gpu1")
    failed = Result(8, "transient", "No space left on device")
    assert wire.decode_result(wire.encode_result(failed, "w"))[0] == failed


@pytest.mark.parametrize("text", [
    "not json", "[]", json.dumps({"v": 1}),
    json.dumps({"v": 1, "worker": "w", "job_id": 1, "outcome": "exploded", "error": None, "outputs": {},
                "audio_s": 0, "language": None, "failures": 0}),
    json.dumps({"v": 1, "worker": "w; rm", "job_id": 1, "outcome": "done", "error": None, "outputs": {},
                "audio_s": 0, "language": None, "failures": 0}),
])
def test_a_bad_result_is_refused(text: str) -> None:
    with pytest.raises(wire.WireError):
        wire.decode_result(text)


def test_local_identity_tolerates_another_hosts_view(tmp_path: Path) -> None:
    f = tmp_path / "x.txt"
    f.write_text("hello")
    st = os.lstat(f)
    other_host = FileIdentity(st.st_dev + 1, st.st_ino + 1, st.st_size, st.st_mtime_ns + 100, "h")
    mine = wire.local_identity(other_host, st)
    assert mine == FileIdentity.of(st, "h")
    assert wire.local_identity(FileIdentity(0, 0, st.st_size + 1, st.st_mtime_ns), st) is None
    assert wire.local_identity(FileIdentity(0, 0, st.st_size, st.st_mtime_ns - 2 * wire.MTIME_TOLERANCE_NS), st) is None
    assert wire.local_identity(FileIdentity(0, 0, 4096, st.st_mtime_ns), os.lstat(tmp_path)) is None  # a folder
