"""The ``scribed`` command line. Thin: parse, load config, call the module that does the work.

Contract:
- Exit status everywhere: 0 success, 1 some recordings failed, 2 usage/config/model errors (and a
  Python module a command needs is missing), 130 interrupted; ``status`` uses 3 for "not
  running", ``doctor`` 1 for "a check failed", ``model pull`` 1 for "the download failed".
  Every error is one ``scribed: ...`` line on stderr (a config error lists each problem).
- Flags that stand for config keys are laid over the loaded config with
  :func:`scribed.config.overlay`, so they are checked by the same rules as the file.
- Each subcommand's module is imported when that subcommand runs: ``status``, ``check-config``,
  ``config init`` and ``doctor`` load no heavy library (torch, transformers, numpy, scipy,
  watchdog; tests/test_imports.py checks it; doctor asks a child process about the device). A
  missing third-party module is reported by name; a broken import inside scribed is a bug and
  raises.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from scribed import __version__, logs
from scribed.config import OUTPUT_FORMATS, Config, expand_path, load_config, overlay, to_dict
from scribed.errors import ScribedError, UsageError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scribed",
        description="Local, private transcription of meeting recordings with Qwen3-ASR. "
                    "Watches drop folders and writes NAME.txt beside each recording; never uses the network.",
    )
    p.add_argument("--version", action="version", version=f"scribed {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", type=Path, help="config file (default: ~/.config/scribed/config.yaml)")
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help=f"more logging: one step per -v along {', '.join(logs.LEVELS)}")
    common.add_argument("-q", "--quiet", action="count", default=0, help="less logging: one step per -q")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser("check-config", parents=[common], help="validate a config file and print the effective config")
    c.add_argument("path", nargs="?", type=Path, help="file to check (default: --config or the default path)")

    ci = sub.add_parser("config", parents=[common], help="write the documented example config (every key and default)")
    cisub = ci.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = cisub.add_parser("init", parents=[common], help="write the example config to PATH or the config path")
    init.add_argument("path", nargs="?", type=Path, help="where (default: --config or ~/.config/scribed/config.yaml)")
    init.add_argument("--force", action="store_true", help="replace an existing file")

    sub.add_parser("doctor", parents=[common], help="check this setup and say how to fix each problem")

    t = sub.add_parser("transcribe", parents=[common], help="transcribe recordings now, in this process")
    t.add_argument("files", nargs="+", type=Path, metavar="FILE")
    t.add_argument("--model", help="model id (local cache) or folder; default: model.id")
    t.add_argument("--language", help="auto, or a code/name such as zh, yue, en, Cantonese")
    t.add_argument("--format", help=f"comma-separated, any of {','.join(OUTPUT_FORMATS)}")
    t.add_argument("--out", type=Path, help="write transcripts into this folder instead of beside each file")
    t.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    t.add_argument("--batch-size", type=int, help="chunks per model batch")
    t.add_argument("--timestamps", action="store_true", default=None, help="[hh:mm:ss] at each paragraph")

    r = sub.add_parser("run", parents=[common], help="run the daemon: watch folders and transcribe new recordings")
    r.add_argument("--once", action="store_true", help="scan, transcribe everything pending, then exit")

    st = sub.add_parser("status", parents=[common], help="what the daemon is doing (reads its journal)")
    st.add_argument("--json", action="store_true", help="one JSON object on stdout (schema in the README)")
    st.add_argument("--follow", "-f", action="store_true", help="a live view, refreshed every second, until Ctrl-C")

    rt = sub.add_parser("retry", parents=[common], help="queue recordings again (after a fix, or freed disk space)")
    rt.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="recordings to queue again")
    rt.add_argument("--failed", action="store_true", help="queue every recording that failed for good")

    m = sub.add_parser("model", parents=[common], help="local models: list, pull (the only network use)")
    msub = m.add_subparsers(dest="action", metavar="ACTION", required=True)
    msub.add_parser("list", parents=[common], help="models available offline")
    mp = msub.add_parser("pull", parents=[common], help="download a model into the local cache")
    mp.add_argument("id", nargs="?", help="model id (default: model.id from the config)")

    s = sub.add_parser("service", parents=[common],
                       help="install/uninstall/status of the systemd user service; unit: print the unit file")
    s.add_argument("action", choices=["install", "uninstall", "status", "unit"])

    sub.add_parser("worker", parents=[common], help="cluster mode: take jobs from the broker (cluster.broker)")

    b = sub.add_parser("bench", parents=[common], help="measure speed on the real Qwen3-ASR architectures")
    b.add_argument("--quick", action="store_true", help="small CI-sized run (0.6B, CPU, minutes)")
    b.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    b.add_argument("--model", help="benchmark this real checkpoint instead of random weights")
    b.add_argument("--sizes", default=None, help="architectures, e.g. 0.6b,1.7b")
    b.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    b.add_argument("--backlog", type=int, default=None, help="number of recordings in the backlog scenario")
    b.add_argument("--batch-size", type=int, default=None)
    b.add_argument("--tokenizer", type=Path,
                   help="folder with the Qwen3-ASR tokenizer files (random weights); default $SCRIBED_TOKENIZER_DIR")
    return p


def _level(cfg: Config, args: argparse.Namespace) -> str:
    """service.log_level, moved one step per -q (quieter) and per -v (more verbose)."""
    return logs.shifted(cfg.service.log_level, args.quiet - args.verbose)


def _flags(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    """The config keys that this command's flags stand for (``None``: flag not given)."""
    get = vars(args).get  # not every command has every flag
    return {
        "model": {"id": get("model"), "device": get("device"), "batch_size": get("batch_size")},
        "transcription": {"language": get("language"), "timestamps": get("timestamps")},
        "output": {"formats": get("format"), "dir": None if get("out") is None else str(get("out"))},
    }


def _cmd_check_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.path or args.config)
    print(f"# {cfg.source or 'defaults (no config file)'}: OK")
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True), end="")
    return 0


def _cmd_transcribe(args: argparse.Namespace, cfg: Config) -> int:
    from scribed.engine.runner import OutputSpec, open_pipeline, transcribe_files
    from scribed.progress import TranscribeProgress

    missing = [str(f) for f in args.files if not f.exists()]
    for name in missing:
        print(f"scribed: no such file: {name}", file=sys.stderr)
    files = [f for f in args.files if f.exists()]
    if not files:
        return 1
    if cfg.policy.block_network:
        # Recordings are read in this process: hardened as the daemon's worker is (no core dumps,
        # no child process that would run without the network guard). With block_network off
        # (tests, development) nothing irreversible is done to the calling process.
        from scribed.system import harden

        harden.harden_process(cfg, "cli")
    pipeline = open_pipeline(cfg)
    spec = OutputSpec(cfg.output.formats, cfg.output.dir, None, cfg.transcription.timestamps)
    with TranscribeProgress(sys.stderr, level=_level(cfg, args)) as progress:
        outcomes = transcribe_files(pipeline, files, spec, on_event=progress,
                                    max_duration_s=cfg.transcription.max_duration_s)
    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        print(f"scribed: FAILED: {o.error}", file=sys.stderr)
    for o in outcomes:
        if o.ok:
            print(" ".join(str(p) for p in o.outputs.values()))
    return 1 if failed or missing else 0


def _cmd_model(args: argparse.Namespace, cfg: Config) -> int:
    from scribed.engine import models

    if args.action == "pull":
        if args.id:
            return models.pull(args.id, cfg.model.cache_dir)
        # No id: everything this config needs, the aligner too when word timestamps are on.
        wanted = [cfg.model.id, *([cfg.model.aligner_id] if cfg.transcription.word_timestamps else [])]
        return max(models.pull(model_id, cfg.model.cache_dir) for model_id in wanted)
    found = models.list_models(cfg.model.cache_dir)
    if not found:
        print(f"no Qwen3-ASR model in the local cache; fetch one with: scribed model pull {cfg.model.id}")
    for m in found:
        mark = "*" if m.id == cfg.model.id else " "
        print(f"{mark} {m.id:32s} {m.size_bytes / 1e9:6.2f} GB  {m.path}")
    local = expand_path(cfg.model.id)
    if local.is_dir():
        print(f"* {cfg.model.id} (local folder)")
    return 0


def _cmd_retry(args: argparse.Namespace, cfg: Config) -> int:
    from scribed.daemon.retry import retry_command  # it also refuses an empty request (exit 2)

    return retry_command(cfg, [Path(os.path.abspath(expand_path(p))) for p in args.paths], args.failed)


def _cmd_config_init(args: argparse.Namespace) -> int:
    from scribed.example import init_config

    target = init_config(args.path or args.config, force=args.force)
    print(f"wrote {target}: every key with its default and a comment; edit it, then: scribed check-config {target}")
    return 0


def _cmd_status(args: argparse.Namespace, cfg: Config) -> int:
    from scribed.daemon.status import follow_status, print_status

    if args.follow:
        if args.json:
            raise UsageError("--follow and --json do not go together (for scripts: run --json repeatedly)")
        return follow_status(cfg)
    return print_status(cfg, as_json=args.json)


def _cmd_worker(cfg: Config) -> int:
    try:
        from scribed.engine.cluster_worker import worker_command
    except ModuleNotFoundError as exc:
        if exc.name not in ("scribed.engine.cluster_worker",):
            raise
        raise UsageError("cluster mode is not part of this installation (no scribed.engine.cluster_worker)") from None
    return worker_command(cfg)


def _run(args: argparse.Namespace) -> int:
    if args.command == "check-config":
        return _cmd_check_config(args)
    if args.command == "config":
        return _cmd_config_init(args)
    if args.command == "doctor":
        from scribed.doctor import doctor_command

        return doctor_command(args.config)
    cfg = overlay(load_config(args.config), _flags(args))
    logs.setup(_level(cfg, args))
    if args.command == "transcribe":
        return _cmd_transcribe(args, cfg)
    if args.command == "model":
        return _cmd_model(args, cfg)
    if args.command == "retry":
        return _cmd_retry(args, cfg)
    if args.command == "run":
        from scribed.daemon.service import run_daemon

        return run_daemon(cfg, once=args.once)
    if args.command == "status":
        return _cmd_status(args, cfg)
    if args.command == "worker":
        return _cmd_worker(cfg)
    if args.command == "service":
        from scribed.system.unit import service_command

        return service_command(args.action, args.config.resolve() if args.config else None)
    if args.command == "bench":
        from scribed.tools.bench import bench_command

        return bench_command(args, cfg)
    raise UsageError(f"unknown command {args.command!r}")  # argparse's choices make this unreachable


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.setup("INFO")
    try:
        return _run(args)
    except ScribedError as exc:  # ConfigError included: exit 2, every problem listed
        print(f"scribed: {exc}", file=sys.stderr)
        return exc.exit_code
    except ImportError as exc:
        # A third-party module this command needs is missing or broken: say which, exactly.
        # An import error inside scribed itself is a bug, and its traceback is the useful report.
        if not exc.name or exc.name.partition(".")[0] == "scribed":
            raise
        print(f"scribed: {args.command}: cannot import the Python module {exc.name!r} ({exc}); "
              "install it, e.g. reinstall scribed with its dependencies", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scribed: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
