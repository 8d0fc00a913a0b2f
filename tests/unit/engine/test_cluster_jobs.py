"""Tests for scribed.engine.cluster_jobs: path mapping, refusals, identity checks and the re-run
rule, on real files (a "mount" is a second path to the same folder: a symlink, as another host's
mount point would be)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import pytest

from scribed.config import Config, parse_config
from scribed.engine import cluster_jobs
from scribed.engine.cluster_jobs import PathMap, Refused, localize
from scribed.errors import RecordingChanged
from scribed.identity import FileIdentity
from scribed.protocol import JobOptions, JobSpec


class Share:
    """The coordinator's view (/…/srv/share) and this worker's mount of it (/…/mnt/share)."""

    def __init__(self, tmp: Path) -> None:
        self.srv = tmp / "srv" / "share"
        (self.srv / "inbox" / "team").mkdir(parents=True)
        (tmp / "mnt").mkdir()
        self.mnt = tmp / "mnt" / "share"
        self.mnt.symlink_to(self.srv)
        self.private = tmp / "home"
        self.private.mkdir()
        (self.private / "secret.wav").write_bytes(b"RIFF private")
        mapping = {str(self.srv): str(self.mnt)}
        self.cfg: Config = parse_config({"cluster": {"broker": "redis://h", "path_map": mapping}})

    def recording(self, name: str = "team/a.wav", data: bytes = b"RIFF....WAVE audio") -> JobSpec:
        path = self.srv / "inbox" / name
        path.write_bytes(data)
        ident = FileIdentity.of(os.lstat(path), hashlib.sha256(data).hexdigest())
        stem = path.with_suffix("")
        return JobSpec(1, path, self.srv / "inbox", ident, {"txt": stem.with_suffix(".txt")},
                       stem.with_name(stem.name + ".failed.txt"), JobOptions(language="en"))


@pytest.fixture
def share(tmp_path: Path) -> Share:
    return Share(tmp_path)


def test_paths_are_mapped_longest_prefix_first(share: Share, tmp_path: Path) -> None:
    cfg = parse_config({"cluster": {"broker": "redis://h", "path_map": {
        str(share.srv): str(share.mnt), str(share.srv / "inbox" / "team"): str(tmp_path / "team-mount")}}})
    paths = PathMap(cfg)
    assert paths.local(share.srv / "inbox" / "x.wav") == share.mnt / "inbox" / "x.wav"
    assert paths.local(share.srv / "inbox" / "team" / "y.wav") == tmp_path / "team-mount" / "y.wav"


def test_without_a_map_the_workers_own_folders_are_the_roots(tmp_path: Path) -> None:
    cfg = parse_config({"watch": {"folders": [str(tmp_path / "in")]}, "output": {"dir": str(tmp_path / "out")}})
    paths = PathMap(cfg)
    assert paths.local(tmp_path / "in" / "a.wav") == tmp_path / "in" / "a.wav"
    assert set(paths.roots) == {tmp_path / "in", tmp_path / "out"}
    with pytest.raises(Refused):
        paths.local(tmp_path / "elsewhere.wav")


@pytest.mark.parametrize("path", ["relative.wav", "/srv/share/../home/secret.wav",
                                  "/srv/share/inbox/../../../etc/passwd", "/etc/passwd", "/srv/sharex/a.wav"])
def test_paths_outside_the_map_or_not_normalised_are_refused(path: str) -> None:
    paths = PathMap(parse_config({"cluster": {"broker": "redis://h", "path_map": {"/srv/share": "/mnt/share"}}}))
    with pytest.raises(Refused):
        paths.local(Path(path))


def test_localize_maps_and_checks_the_recording(share: Share) -> None:
    spec = share.recording()
    local = localize(spec, PathMap(share.cfg))
    assert local.path == share.mnt / "inbox" / "team" / "a.wav"
    assert local.root == share.mnt  # the mapped root: no link below it is followed
    assert local.outputs == {"txt": share.mnt / "inbox" / "team" / "a.txt"}
    assert local.identity.sha256 == spec.identity.sha256 and local.identity.size == spec.identity.size
    assert local.options == spec.options and local.job_id == spec.job_id


@pytest.mark.parametrize("damage", [
    lambda s, sh: replace(s, path=sh.private / "secret.wav"),
    lambda s, sh: replace(s, root=sh.private, path=sh.private / "secret.wav"),
    lambda s, sh: replace(s, path=sh.srv / "other" / "a.wav"),  # not inside its watched folder
    lambda s, sh: replace(s, outputs={"txt": sh.private / "a.txt"}),
    lambda s, sh: replace(s, outputs={"txt": sh.srv / "inbox" / "team" / "a.doc"}),
    lambda s, sh: replace(s, outputs={"exe": sh.srv / "inbox" / "team" / "a.exe"}),
    lambda s, sh: replace(s, failure_note=sh.private / "note.txt"),
    lambda s, sh: replace(s, out_dir=sh.private, outputs={"txt": sh.private / "a.txt"}),
    lambda s, sh: replace(s, options=JobOptions(language="klingon")),
    lambda s, sh: replace(s, options=JobOptions(speakers="many")),
])
def test_localize_refuses_what_a_compromised_broker_could_ask(share: Share, damage) -> None:
    with pytest.raises(Refused):
        localize(damage(share.recording(), share), PathMap(share.cfg))


def test_outputs_may_go_to_a_mapped_output_folder(share: Share) -> None:
    (share.srv / "transcripts").mkdir()
    spec = replace(share.recording(), out_dir=share.srv / "transcripts",
                   outputs={"txt": share.srv / "transcripts" / "team" / "a.txt"})
    local = localize(spec, PathMap(share.cfg))
    assert local.out_dir == share.mnt and local.outputs["txt"] == share.mnt / "transcripts" / "team" / "a.txt"


def test_a_different_file_is_changed_and_a_missing_one_not_found(share: Share) -> None:
    spec = share.recording()
    paths = PathMap(share.cfg)
    same_size = spec.path.read_bytes().replace(b"audio", b"AUDIO")
    st = os.lstat(spec.path)
    spec.path.write_bytes(same_size)
    os.utime(spec.path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: only the hash tells
    with pytest.raises(RecordingChanged, match="sha256"):
        localize(spec, paths)
    spec.path.write_bytes(b"longer content than before")
    with pytest.raises(RecordingChanged, match="bytes"):
        localize(spec, paths)
    spec.path.unlink()
    with pytest.raises(FileNotFoundError):
        localize(spec, paths)


def test_links_are_never_followed_below_the_root(share: Share) -> None:
    spec = share.recording()
    spec.path.unlink()
    spec.path.symlink_to(share.private / "secret.wav")
    with pytest.raises(OSError):
        localize(spec, PathMap(share.cfg))
    spec.path.unlink()
    team = share.srv / "inbox" / "team"
    team.rmdir()
    team.symlink_to(share.private)  # the folder swapped for a link into the owner's home
    (share.private / "a.wav").write_bytes(b"RIFF....WAVE audio")
    with pytest.raises(OSError):
        localize(spec, PathMap(share.cfg))


def test_replaceable_is_translated_or_dropped(share: Share) -> None:
    spec = share.recording()
    txt = spec.outputs["txt"]
    txt.write_text("an earlier transcript scribed wrote\n")
    st = os.lstat(txt)
    other_host_view = FileIdentity(st.st_dev + 7, st.st_ino, st.st_size, st.st_mtime_ns)
    local = localize(replace(spec, replaceable={"txt": other_host_view}), PathMap(share.cfg))
    assert local.replaceable["txt"].same_file(os.lstat(share.mnt / "inbox" / "team" / "a.txt"))
    txt.write_text("somebody else's file now\n")
    assert localize(replace(spec, replaceable={"txt": other_host_view}), PathMap(share.cfg)).replaceable == {}


def test_the_rerun_rule(share: Share) -> None:
    spec = localize(share.recording(), PathMap(share.cfg))
    spec = replace(spec, outputs={**spec.outputs, "srt": spec.path.with_suffix(".srt")})
    spec.outputs["srt"].write_text("1\n00:00:00,000 --> 00:00:01,000\nolder\n")
    before = cluster_jobs.outputs_state(spec.outputs)
    assert before["txt"] is None and before["srt"] is not None
    assert cluster_jobs.written_since(spec.outputs, before) == {}  # the old srt is not the attempt's
    spec.outputs["txt"].write_text("written by the first attempt\n")
    found = cluster_jobs.written_since(spec.outputs, before)
    assert set(found) == {"txt"} and found["txt"].same_file(os.lstat(spec.outputs["txt"]))
    spec.outputs["srt"].write_text("1\n00:00:00,000 --> 00:00:01,000\nnew, longer text\n")
    assert set(cluster_jobs.written_since(spec.outputs, before)) == {"txt", "srt"}
    assert cluster_jobs.written_since(spec.outputs, {"txt": "junk"}).keys() == {"txt", "srt"}
