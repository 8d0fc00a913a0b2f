"""Every message between the daemon and its worker, as frozen dataclasses.

Contract:
- Daemon -> worker: :class:`Jobs` (a batch of :class:`JobSpec`), :class:`Stop`.
  Worker -> daemon: :class:`Ready`, :class:`Progress`, :class:`Result`, :class:`Idle`,
  :class:`Unloaded`, :class:`Fatal`.
- A :class:`JobSpec` carries everything the worker needs and decides nothing itself: the output
  paths were chosen once, at dispatch, and are stored in the journal; ``identity`` is the
  recording as it was queued (the worker refuses content that no longer matches it);
  ``replaceable`` lists the outputs scribed itself wrote earlier, the only existing files the
  writer may replace (unless ``output.overwrite``); ``out_dir`` is the output folder in effect
  for it (None: beside the recording). Its :class:`JobOptions` are the settings of the
  recording's watched folder over the config's, resolved by the daemon: the worker transcribes
  and renders with them, whatever its own config says.
- A :class:`Result`'s ``outcome`` is the worker's classification; the daemon never guesses from
  the error text. One of :data:`OUTCOMES`:
  ``done`` (written), ``retry`` (failed, counts an attempt), ``final`` (the file itself is bad:
  no more attempts), ``transient`` (disk full, I/O error, output not writable, out of memory:
  retried with backoff without consuming attempts), ``changed`` (the recording's content
  changed while it was transcribed: requeued, the new content is transcribed), ``skipped`` (a
  transcript scribed did not write appeared at an output name meanwhile: the recording is
  skipped as it would have been had that transcript been there when it was found).
- Standard library and :mod:`scribed.identity` only: both processes import this, and the
  daemon side must stay light. Everything here pickles (messages cross a multiprocessing pipe).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from scribed.identity import FileIdentity

Outcome = Literal["done", "retry", "final", "transient", "changed", "skipped"]
OUTCOMES: tuple[str, ...] = ("done", "retry", "final", "transient", "changed", "skipped")


@dataclass(frozen=True)
class JobOptions:
    """How one recording is transcribed and rendered (the formats are the keys of ``JobSpec.outputs``).

    ``language`` is spelled as in the config (``auto``, a code or a name); ``glossary`` is the
    whole glossary in effect (the folder's merged into the config's)."""

    language: str = "auto"
    context: str = ""
    glossary: Mapping[str, str] = field(default_factory=dict)
    speakers: str | int = "off"  # off | auto | a number of speakers
    timestamps: bool = False  # [hh:mm:ss] at each paragraph of the .txt


@dataclass(frozen=True)
class JobSpec:
    """One recording to transcribe, with its output paths and options decided at dispatch."""

    job_id: int
    path: Path
    root: Path
    identity: FileIdentity
    outputs: dict[str, Path]
    failure_note: Path
    options: JobOptions = field(default_factory=JobOptions)
    replaceable: dict[str, FileIdentity] = field(default_factory=dict)
    out_dir: Path | None = None


# -- daemon -> worker ------------------------------------------------------------------------

@dataclass(frozen=True)
class Jobs:
    jobs: tuple[JobSpec, ...]


@dataclass(frozen=True)
class Stop:
    pass


# -- worker -> daemon ------------------------------------------------------------------------

@dataclass(frozen=True)
class Ready:
    """The model is loaded; the worker takes jobs."""

    model: str
    device: str
    load_s: float
    pid: int


@dataclass(frozen=True)
class Result:
    """How one job ended. ``outputs`` maps format -> identity of the file written at the
    JobSpec's path for that format (what a later job may replace, and what a move follows)."""

    job_id: int
    outcome: Outcome
    error: str | None = None
    outputs: dict[str, FileIdentity] = field(default_factory=dict)
    audio_s: float = 0.0
    language: str | None = None
    failures: int = 0  # chunks reported as possibly incomplete

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}; expected one of {', '.join(OUTCOMES)}")


@dataclass(frozen=True)
class Idle:
    """The worker finished its batch and waits for the next."""


@dataclass(frozen=True)
class Unloaded:
    """The model was unloaded after the idle limit; it reloads with the next batch."""


@dataclass(frozen=True)
class Fatal:
    """The worker cannot work (e.g. the model does not load) and exits; ``message`` says why."""

    message: str


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` chunks of job ``job_id`` are recognised (sent per finished chunk)."""

    job_id: int
    done: int
    total: int


ToWorker = Jobs | Stop
FromWorker = Ready | Progress | Result | Idle | Unloaded | Fatal
