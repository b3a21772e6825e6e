"""The ``ncps-mlx`` command.

Ctrl-C stops every command with one line on stderr and exit code 130, never a traceback;
``train`` and ``demo`` stop at a step boundary, save, and say how to continue.
"""

import argparse
import contextlib
import json
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

#: The exit code of a command stopped by Ctrl-C: the shell's 128 + SIGINT.
INTERRUPTED = 130


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    with _resumable(args.argv, Path(args.out)):
        metrics = run_demo(
            args.out,
            epochs=args.epochs,
            seed=args.seed,
            export=not args.no_export,
            progress=not args.no_progress,
            resume=args.resume,
        )
    return 1 if metrics["export"]["status"] == "failed" else 0


def _export(args: argparse.Namespace) -> int:
    from . import io
    from .export import to_coreml, verify

    model = io.load(args.checkpoint)
    path = to_coreml(
        model,
        args.out,
        kind=args.kind,
        precision=args.precision,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        compute_units=args.compute_units,
        minimum_deployment_target=args.target,
        timespans=args.timespans,
    )
    print(f"wrote {path}")
    if args.verify:
        import numpy as np

        steps = args.seq_len or 8
        rng = np.random.default_rng(0)
        inputs = {"x": rng.normal(size=(args.batch_size, steps, model.input_size))}
        if args.timespans:
            inputs["dt"] = rng.uniform(0.5, 1.5, size=(args.batch_size, steps))
        print(verify(path, model, inputs))
    return 0


def _kernels(args: argparse.Namespace) -> int:
    from .kernels import build, library

    if args.action == "clear":
        removed = build.clear()
        print(f"removed {len(removed)} cached build(s) from {build.cache_dir()}")
        return 0
    reason = library.unavailable_reason()  # builds and proves them when needed
    for key, value in library.status().items():
        print(f"{key + ':':<12} {value}")
    return 0 if reason is None or args.action == "status" else 1


LIVE_FIGURES = (
    ("cpu_percent", "cpu%", 1),
    ("process_rss_bytes", "rss MiB", 2**-20),
    ("mlx_active_bytes", "mlx MiB", 2**-20),
    ("gpu_utilization_percent", "gpu%", 1),
    ("gpu_power_w", "gpu W", 1),
    ("ane_power_w", "ane W", 1),
    ("dram_read_bytes_per_s", "rd GB/s", 1e-9),
    ("dram_write_bytes_per_s", "wr GB/s", 1e-9),
)


def _live_line(sample: dict) -> str:
    cells = [f"{sample['time_s']:8.1f}"]
    for key, _, scale in LIVE_FIGURES:
        value = sample.get(key)
        cells.append(f"{value * scale:>9.1f}" if value is not None else f"{'-':>9}")
    return " ".join(cells)


def _monitor(args: argparse.Namespace) -> int:
    import time

    from .monitor import Monitor, Run

    if args.action == "report":
        if args.run is None:
            print("ncps-mlx monitor report: give the saved run (.jsonl or .csv)", file=sys.stderr)
            return 2
        run = Run.load(args.run)
        out = Path(args.out or Path(args.run).with_suffix(""))
        out.mkdir(parents=True, exist_ok=True)
        summary = run.summary()
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        run.plot(out / "monitor.png")
        print(summary)
        print(f"wrote {out / 'summary.json'} and {out / 'monitor.png'}")
        return 0
    backends = args.backends.split(",") if args.backends != "auto" else "auto"
    monitor = Monitor(interval=args.interval, backends=backends, health=False)
    print(f"{'time s':>8} " + " ".join(f"{label:>9}" for _, label, _ in LIVE_FIGURES))
    shown = 0
    try:
        with monitor:
            print(f"backends: {', '.join(b.name for b in monitor.backends)} (Ctrl-C stops)")
            end = time.monotonic() + args.duration if args.duration else None
            while end is None or time.monotonic() < end:
                time.sleep(args.interval / 4)
                for sample in monitor.samples[shown:]:
                    print(_live_line(sample), flush=True)
                shown = len(monitor.samples)
    finally:  # Ctrl-C ends a live view: what it recorded is kept
        if args.out:
            print(f"wrote {monitor.save(args.out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ncps-mlx", description="Neural Circuit Policies on Apple's MLX."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command")
    _add_demo_parser(commands)
    _add_export_parser(commands)
    _add_kernels_parser(commands)
    _add_monitor_parser(commands)
    _add_train_parser(commands)
    _add_validate_parser(commands)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_demo_parser(commands: argparse._SubParsersAction) -> None:
    from .demo import DEFAULT_EPOCHS

    demo = commands.add_parser(
        "demo",
        help="train an NCP on a built-in task, evaluate, export and report it",
        description="Train a CfC with an AutoNCP wiring to forecast irregularly sampled "
        "oscillations; write the checkpoint, a Core ML package, metrics.json, plots and "
        "report.md to --out. Exits 1 if the Core ML export fails.",
    )
    demo.add_argument("--out", default="ncps_demo", help="output folder (default: ncps_demo)")
    demo.add_argument(
        "--epochs",
        type=_positive_int,
        default=DEFAULT_EPOCHS,
        help=f"training epochs (default: {DEFAULT_EPOCHS})",
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument(
        "--no-export", action="store_true", help="skip the Core ML export and its check"
    )
    demo.add_argument(
        "--no-progress", action="store_true", help="log every few epochs instead of a bar"
    )
    demo.add_argument(
        "--resume",
        action="store_true",
        help="continue the training saved in --out (same --epochs and --seed)",
    )
    demo.set_defaults(handler=_demo)


def _add_kernels_parser(commands: argparse._SubParsersAction) -> None:
    kernels = commands.add_parser(
        "kernels",
        help="build the fused CPU kernels now, say whether they run here, or clear their cache",
        description="'build' compiles the kernels for this machine and proves them against "
        "MLX operations (what the first model call would do; exit 1 if they cannot be used), "
        "'status' says where they are cached and whether they run here, 'clear' removes "
        "the cached builds.",
    )
    kernels.add_argument("action", choices=["build", "status", "clear"])
    kernels.set_defaults(handler=_kernels)


def _add_monitor_parser(commands: argparse._SubParsersAction) -> None:
    monitor = commands.add_parser(
        "monitor", help="live view of memory, bandwidth and utilization, or a saved run's report"
    )
    monitor.add_argument("action", nargs="?", choices=["live", "report"], default="live")
    monitor.add_argument("run", nargs="?", help="a run saved as .jsonl or .csv (for 'report')")
    monitor.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    monitor.add_argument("--duration", type=float, default=None, help="stop after this many s")
    monitor.add_argument("--backends", default="auto", help="'auto' or names, comma-separated")
    monitor.add_argument("--out", default=None, help="live: save the run here; report: folder")
    monitor.set_defaults(handler=_monitor)


def _add_export_parser(commands: argparse._SubParsersAction) -> None:
    from .export.coreml import COMPUTE_UNITS, KINDS, PRECISIONS

    export = commands.add_parser(
        "export", help="export a checkpoint to Core ML (needs the 'export' extra)"
    )
    export.add_argument("checkpoint", help="a checkpoint written by ncps_mlx.save")
    export.add_argument("--out", required=True, help="the .mlpackage to write")
    export.add_argument("--kind", choices=KINDS, default="step")
    export.add_argument("--precision", choices=PRECISIONS, default="float16")
    export.add_argument("--batch-size", type=int, default=1)
    export.add_argument("--seq-len", type=int, default=None, help="steps (kind 'sequence')")
    export.add_argument("--compute-units", choices=list(COMPUTE_UNITS), default="cpu_and_ne")
    export.add_argument("--target", default=None, help="minimum deployment target, e.g. macOS14")
    export.add_argument("--timespans", action="store_true", help="add the 'dt' input")
    export.add_argument(
        "--verify", action="store_true", help="check the saved package against the checkpoint"
    )
    export.set_defaults(handler=_export)


def _read_run_config(args: argparse.Namespace):
    """The validated config, or None after printing its problems."""
    from .config import ConfigError, read_config

    try:
        return read_config(args.config, output_dir=args.out, resume=args.resume or None)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return None


def _validate(args: argparse.Namespace) -> int:
    config = _read_run_config(args)
    if config is None:
        return 2
    print(config.summary())
    print(f"{args.config}: valid")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .config import run_config
    from .errors import NCPSError

    config = _read_run_config(args)
    if config is None:
        return 2
    try:
        with _resumable(args.argv, config.output.dir):
            run_config(config)
    except (NCPSError, ValueError) as error:
        # Problems only the data itself shows (or a diverged run): a message, no traceback.
        print(f"ncps-mlx train: {error}", file=sys.stderr)
        return 1
    return 0


def _add_run_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a TOML run config (see ncps_mlx.config)")
    parser.add_argument("--out", default=None, help="output folder, instead of output.dir")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in the output folder"
    )


def _add_train_parser(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train", help="train as a TOML config says (validated first; exit 2 on problems)"
    )
    _add_run_config_arguments(train)
    train.set_defaults(handler=_train)


def _add_validate_parser(commands: argparse._SubParsersAction) -> None:
    validate = commands.add_parser(
        "validate", help="check a TOML run config and say what it would run (exit 2 on problems)"
    )
    _add_run_config_arguments(validate)
    validate.set_defaults(handler=_validate)


@contextlib.contextmanager
def _resumable(argv: list[str], out: Path) -> Iterator[None]:
    """Run a command that trains into ``out``: on Ctrl-C, say how to continue when there is
    a checkpoint to continue from (the command again, with ``--resume``)."""
    from .config.output import CHECKPOINTS
    from .errors import TrainingInterrupted
    from .training.fit import LAST_CHECKPOINT, resume_command

    command = shlex.join(["ncps-mlx", *[arg for arg in argv if arg != "--resume"], "--resume"])
    checkpoint = out / CHECKPOINTS / LAST_CHECKPOINT
    with resume_command(f"`{command}`"):  # fit's own message names it
        try:
            yield
        except TrainingInterrupted:
            raise
        except KeyboardInterrupt as interrupt:  # a second Ctrl-C, or one outside fit
            if not checkpoint.exists():
                raise
            message = f"interrupted; continue from {str(checkpoint)!r} with `{command}`"
            raise TrainingInterrupted(message, str(checkpoint)) from interrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return _run(argv)
    except KeyboardInterrupt as interrupt:
        # Stopping is the user's choice, not a failure to explain: one line, no traceback.
        command = next((arg for arg in argv if not arg.startswith("-")), None)
        name = f"ncps-mlx {command}" if command else "ncps-mlx"
        print(f"{name}: {str(interrupt) or 'interrupted'}", file=sys.stderr)
        return INTERRUPTED


def _run(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv  # how train and demo say to resume
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
