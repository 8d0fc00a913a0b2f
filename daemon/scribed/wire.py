"""Cluster mode's wire format: jobs and results as plain JSON, and the broker keys scribed uses.

Contract:
- The coordinator (:mod:`scribed.daemon.cluster`) and the workers
  (:mod:`scribed.engine.cluster_worker`) exchange JSON only, never pickle: a compromised broker
  must not be able to run code. A task's one argument is ``{"v": 1, "coordinator": ID,
  "jobs": [...]}``, each job a :class:`~scribed.protocol.JobSpec` plus its key; a result is a
  :class:`~scribed.protocol.Result` plus the worker's name. :func:`decode_task` and
  :func:`decode_result` check every field's type and raise :class:`WireError` otherwise (the
  worker then checks the paths themselves: :mod:`scribed.engine.cluster_jobs`).
- A job's key (:func:`job_key`, ``COORD-JOB-GEN-HASH``) names one dispatch of one recording's
  content. It stays the same when the coordinator publishes the job again (after its own
  restart), so the workers' ledger runs it once; ``GEN`` grows once the coordinator has consumed
  a result for that job, so a retry is a new dispatch.
- :class:`Keys` names every broker key scribed keeps beside Celery's own, all under
  ``scribed:QUEUE:``. Results and markers live :data:`RETAIN_S`.
- Paths travel as JSON text; undecodable bytes are surrogate escapes, which JSON keeps.
- Standard library, protocol and identity only (both sides import this).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scribed.identity import FileIdentity
from scribed.protocol import OUTCOMES, JobOptions, JobSpec, Result

VERSION = 1
TASK_NAME = "scribed.transcribe"
RETAIN_S = 30 * 86400  # results and markers outlive any copy of a message still queued
_COORDINATOR = re.compile(r"[0-9a-f]{8,64}")
_KEY = re.compile(r"[0-9a-f]{8,64}-\d{1,18}-\d{1,18}-[0-9a-f]{0,64}")
_WORKER = re.compile(r"[\w.@:-]{1,200}")
# Hosts see one file's mtime through different filesystems (ns, 100 ns, us precision).
MTIME_TOLERANCE_NS = 1_000_000_000


class WireError(ValueError):
    """A message that is not what scribed sends: dropped, and logged without its content."""


@dataclass(frozen=True)
class Task:
    """A decoded message: its jobs, and those it names but this version cannot read (key,
    job id, why): the worker answers them with a failure rather than leaving them unanswered."""

    coordinator: str
    jobs: tuple[tuple[str, JobSpec], ...]  # (key, spec)
    unreadable: tuple[tuple[str, int, str], ...] = ()
    skipped: int = 0  # jobs without even a readable key and job id


def local_identity(seen: FileIdentity, st: os.stat_result) -> FileIdentity | None:
    """This host's identity of the file another host described as ``seen``, if ``st`` is that file
    as far as a second host can tell: a regular file of the same size and (nearly) the same mtime.
    Device numbers differ between hosts, and some network filesystems number inodes per host."""
    if not stat.S_ISREG(st.st_mode) or st.st_size != seen.size:
        return None
    if abs(st.st_mtime_ns - seen.mtime_ns) > MTIME_TOLERANCE_NS:
        return None
    return FileIdentity.of(st, seen.sha256)


def job_key(coordinator: str, job_id: int, gen: int, identity: FileIdentity) -> str:
    return f"{coordinator}-{job_id}-{gen}-{(identity.sha256 or '')[:16]}"


@dataclass(frozen=True)
class Keys:
    """The broker keys of one queue (Celery's own live beside them)."""

    queue: str

    @property
    def prefix(self) -> str:
        return f"scribed:{self.queue}:"

    def result(self, key: str) -> str:
        return f"{self.prefix}result:{key}"

    def claim(self, key: str) -> str:
        return f"{self.prefix}claim:{key}"

    def attempt(self, key: str) -> str:
        return f"{self.prefix}attempt:{key}"

    def progress(self, key: str) -> str:
        return f"{self.prefix}progress:{key}"

    def gen(self, coordinator: str, job_id: int) -> str:
        return f"{self.prefix}gen:{coordinator}:{job_id}"

    def wake(self, coordinator: str) -> str:
        return f"{self.prefix}wake:{coordinator}"

    @property
    def workers(self) -> str:
        return f"{self.prefix}workers"

    def worker(self, name: str) -> str:
        return f"{self.prefix}worker:{name}"


# -- encoding ---------------------------------------------------------------------------------------
def _identity(ident: FileIdentity) -> list[Any]:
    return [ident.dev, ident.ino, ident.size, ident.mtime_ns, ident.sha256]


def _paths(paths: Mapping[str, Path]) -> dict[str, str]:
    return {fmt: str(p) for fmt, p in paths.items()}


def encode_task(coordinator: str, jobs: list[tuple[str, JobSpec]]) -> dict[str, Any]:
    return {"v": VERSION, "coordinator": coordinator, "jobs": [
        {"key": key, "job_id": s.job_id, "path": str(s.path), "root": str(s.root), "identity": _identity(s.identity),
         "outputs": _paths(s.outputs), "failure_note": str(s.failure_note),
         "options": {k: dict(v) if isinstance(v, Mapping) else v for k, v in dataclasses.asdict(s.options).items()},
         "replaceable": {f: _identity(i) for f, i in s.replaceable.items()},
         "out_dir": None if s.out_dir is None else str(s.out_dir)}
        for key, s in jobs]}


def encode_result(result: Result, worker: str) -> str:
    return json.dumps({"v": VERSION, "worker": worker, "job_id": result.job_id, "outcome": result.outcome,
                       "error": result.error, "outputs": {f: _identity(i) for f, i in result.outputs.items()},
                       "audio_s": result.audio_s, "language": result.language, "failures": result.failures})


# -- decoding (untrusted input) -------------------------------------------------------------------
def _get(data: Any, name: str, kind: type | tuple[type, ...], *, optional: bool = False) -> Any:
    if not isinstance(data, dict):
        raise WireError("expected an object")
    value = data.get(name)
    if value is None and optional:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise WireError(f"{name}: expected {' or '.join(k.__name__ for k in kinds)}")
    return value


def _decode_identity(value: Any) -> FileIdentity:
    if not (isinstance(value, list) and len(value) == 5 and all(type(v) is int for v in value[:4])
            and (value[4] is None or isinstance(value[4], str))):
        raise WireError("identity: expected [dev, ino, size, mtime_ns, sha256]")
    return FileIdentity(*value)


def _path(value: Any) -> Path:
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise WireError("expected an absolute path")
    return Path(value)


def _mapping(value: Any, convert: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise WireError("expected an object")
    return {k: convert(v) for k, v in value.items()}


def _option(name: str, value: Any, default: Any) -> Any:
    """A JobOptions field: JSON of the default's kind (text, flag, number, text->text mapping).
    What the values mean (a known language...) the worker checks before it starts."""
    if isinstance(default, Mapping):
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise WireError(f"options.{name}: expected an object of strings")
        return value
    if value is None or isinstance(value, str | int | float):
        return value
    raise WireError(f"options.{name}: expected text, a number or a flag")


def _options(data: Any) -> JobOptions:
    if not isinstance(data, dict):
        raise WireError("options: expected an object")
    fields = {f.name: f for f in dataclasses.fields(JobOptions)}
    unknown = set(data) - set(fields)
    if unknown:
        raise WireError(f"options: unknown {', '.join(sorted(unknown))} (coordinator and worker versions differ?)")
    defaults = JobOptions()
    return JobOptions(**{k: _option(k, v, getattr(defaults, k)) for k, v in data.items()})


def _decode_job(data: Any, coordinator: str) -> tuple[str, JobSpec]:
    key = _get(data, "key", str)
    if not _KEY.fullmatch(key) or not key.startswith(coordinator + "-"):
        raise WireError("key: malformed")
    out_dir = data.get("out_dir")
    spec = JobSpec(job_id=_get(data, "job_id", int), path=_path(data.get("path")), root=_path(data.get("root")),
                   identity=_decode_identity(data.get("identity")), outputs=_mapping(data.get("outputs"), _path),
                   failure_note=_path(data.get("failure_note")), options=_options(data.get("options")),
                   replaceable=_mapping(data.get("replaceable"), _decode_identity),
                   out_dir=None if out_dir is None else _path(out_dir))
    return key, spec


def decode_task(payload: Any) -> Task:
    """The task argument as sent by :func:`encode_task`; WireError if it is not one at all."""
    if _get(payload, "v", int) != VERSION:
        raise WireError(f"unsupported version {payload.get('v')!r}")
    coordinator = _get(payload, "coordinator", str)
    if not _COORDINATOR.fullmatch(coordinator):
        raise WireError("coordinator: malformed")
    jobs, unreadable, skipped = [], [], 0
    for job in _get(payload, "jobs", list):
        try:
            jobs.append(_decode_job(job, coordinator))
        except WireError as exc:
            key, job_id = job.get("key") if isinstance(job, dict) else None, _job_id(job)
            readable = isinstance(key, str) and _KEY.fullmatch(key) and key.startswith(coordinator + "-")
            if readable and job_id is not None:
                unreadable.append((key, job_id, str(exc)))
            else:
                skipped += 1  # nothing to answer it by
    return Task(coordinator, tuple(jobs), tuple(unreadable), skipped)


def _job_id(job: Any) -> int | None:
    value = job.get("job_id") if isinstance(job, dict) else None
    return value if type(value) is int else None


def decode_result(text: str | bytes) -> tuple[Result, str]:
    """(Result, worker name) from :func:`encode_result`'s text; WireError for anything else."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"not JSON: {exc}") from None
    if _get(data, "v", int) != VERSION:
        raise WireError("unsupported version")
    outcome = _get(data, "outcome", str)
    if outcome not in OUTCOMES:
        raise WireError("outcome: unknown")
    worker = _get(data, "worker", str)
    if not _WORKER.fullmatch(worker):
        raise WireError("worker: malformed")
    audio_s = _get(data, "audio_s", (int, float))
    result = Result(_get(data, "job_id", int), outcome, _get(data, "error", str, optional=True),  # type: ignore[arg-type]
                    _mapping(data.get("outputs"), _decode_identity), float(audio_s),
                    _get(data, "language", str, optional=True), _get(data, "failures", int))
    return result, worker
