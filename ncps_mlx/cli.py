"""The ``ncps-mlx`` command.

A mistake ends every command the same way: ``ncps-mlx <command>: <what is wrong>`` on
stderr, on one line or two (the second says what to do or where to read more), flags
named as typed, and exit code 2 when the command line cannot run as typed (a bad flag, a
missing file) or 1 when the command ran and failed (an unreadable checkpoint, a missing
optional dependency). A traceback only for a bug, or with ``ncps-mlx --debug``.

Ctrl-C stops every command with one line on stderr and exit code 130, never a traceback;
``train`` and ``demo`` stop at a step boundary, save, and say how to continue.
"""

import argparse
import contextlib
import json
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

from ._cli_args import (
    Parser,
    existing_file,
    integer,
    monitor_backends,
    natural,
    output_folder,
    package_path,
    positive_int,
    positive_number,
)

#: The exit code of a command line that cannot run as typed: fix the command.
USAGE = 2
#: The exit code of a command that ran and failed.
FAILED = 1
#: The exit code of a command stopped by Ctrl-C: the shell's 128 + SIGINT.
INTERRUPTED = 130


class UsageError(Exception):
    """The command line asks for what the command cannot do (exit 2); the message names
    the flags as typed and what to give instead."""


class CommandFailed(Exception):
    """The command ran and failed for a reason its message explains (exit 1)."""


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
            overwrite=args.overwrite,
            baselines=not args.no_baselines,
        )
    return 1 if metrics["export"]["status"] == "failed" else 0


def _policies(args: argparse.Namespace) -> int:
    from .policies.evaluation import QUICK, Imitation
    from .policies.run import run_policies

    run_policies(
        args.out,
        tasks=args.tasks,
        kinds=args.models,
        seeds=range(args.seeds),
        train_seed=args.seed,
        settings=QUICK if args.quick else Imitation(),
        export=not args.no_export,
        figures=not args.no_figures,
        latency=not args.no_latency,
        overwrite=args.overwrite,
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    from . import io
    from .export import to_coreml, verify
    from .export.coreml import interface

    _check_export_flags(args)
    model = io.load(args.checkpoint)
    timespans, note = _export_timespans(args)
    try:
        path = to_coreml(
            model,
            args.out,
            kind=args.kind,
            precision=args.precision,
            batch_size=args.batch_size,
            seq_len=args.seq_len,
            compute_units=args.compute_units,
            minimum_deployment_target=args.target,
            timespans=timespans,
        )
    except ValueError as error:  # what only coremltools knows: the names of --target
        raise UsageError(_as_export_flags(str(error))) from error
    spec = interface(model, args.kind, args.batch_size, args.seq_len, timespans)
    print(f"wrote {path} (inputs: {', '.join(spec.inputs)})")
    if note:
        print(f"ncps-mlx export: note: {note}", file=sys.stderr)
    if args.verify:
        import numpy as np

        steps = args.seq_len or 8
        rng = np.random.default_rng(0)
        inputs = {"x": rng.normal(size=(args.batch_size, steps, model.input_size))}
        if timespans:
            inputs["dt"] = rng.uniform(0.5, 1.5, size=(args.batch_size, steps))
        print(verify(path, model, inputs))
    return 0


def _check_export_flags(args: argparse.Namespace) -> None:
    """The flag combinations ``to_coreml`` refuses, said with the flags, before any work."""
    if args.kind == "sequence" and args.seq_len is None:
        raise UsageError("--kind sequence needs --seq-len, the steps of each call (e.g. 32)")
    if args.kind != "sequence" and args.seq_len is not None:
        raise UsageError(f"--seq-len is for --kind sequence; --kind {args.kind} runs one step")
    if args.kind == "stateful" and args.precision != "float16":
        raise UsageError(
            "--kind stateful keeps its state in Core ML state tensors, which are float16: "
            "use --precision float16"
        )


def _as_export_flags(message: str) -> str:
    """A ``to_coreml`` message in the export command's words (its flags for its arguments)."""
    message = message.replace("minimum_deployment_target", "--target")
    return re.sub(r"\bkind='(\w+)'", r"--kind \1", message)


def _export_timespans(args: argparse.Namespace) -> tuple[bool, str | None]:
    """``--timespans`` / ``--no-timespans``, else what the checkpoint says the model was
    trained with (a model trained on irregular steps needs their time gaps in the app
    too); and a note when the checkpoint does not say."""
    import warnings

    from . import io
    from .errors import UnverifiedCheckpointWarning
    from .training.checkpoint import read_trained_with

    if args.timespans is not None:
        return args.timespans, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnverifiedCheckpointWarning)  # loading it warned
        header, _ = io.read_checkpoint(args.checkpoint)
    trained_with = read_trained_with(header["metadata"])
    if trained_with is None:
        return False, (
            "the checkpoint does not say whether its model was trained with timespans; "
            "exported without the 'dt' input (--timespans adds it)"
        )
    return trained_with["timespans"], None


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


def _monitor(args: argparse.Namespace) -> int:
    if args.action == "report":
        return _monitor_report(args)
    from .monitor.live import LiveView

    # 'mlx' with --pid is a ValueError (exit 2); a backend that cannot run here or a
    # process that is not there a LiveViewError (exit 1): _run says them.
    view = LiveView(args.backends, pid=args.pid, interval=args.interval).start()
    try:
        view.follow(lambda line: print(line, flush=True), args.duration)
    finally:  # Ctrl-C ends a live view: what it recorded is kept
        view.stop()
        if args.out:
            print(f"wrote {view.save(args.out)}")
    return 0


def _monitor_report(args: argparse.Namespace) -> int:
    from .monitor import Run

    if args.pid is not None:
        raise UsageError("--pid is for the live view, not for report")
    if args.run is None:
        raise UsageError("report needs the saved run: ncps-mlx monitor report RUN.jsonl")
    run = Run.load(args.run)
    out = Path(args.out or Path(args.run).with_suffix(""))
    out.mkdir(parents=True, exist_ok=True)
    summary = run.summary()
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    run.plot(out / "monitor.png")
    print(summary)
    print(f"wrote {out / 'summary.json'} and {out / 'monitor.png'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser of the `ncps-mlx` command line, with one subcommand per task.

    Returns:
        The parser of `ncps-mlx [--version] [--debug] <command> ...`; each subcommand
        stores its handler in `args.handler`.
    """
    parser = Parser(prog="ncps-mlx", description="Neural Circuit Policies on Apple's MLX.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", metavar="command")
    _add_demo_parser(commands)
    _add_export_parser(commands)
    _add_kernels_parser(commands)
    _add_monitor_parser(commands)
    _add_policies_parser(commands)
    _add_train_parser(commands)
    _add_validate_parser(commands)
    for command in commands.choices.values():  # also after the command, where users put it
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    return parser


_DEBUG_HELP = "on a failure, show the traceback instead of the one-line message"


def _add_demo_parser(commands: argparse._SubParsersAction) -> None:
    from .demo import DEFAULT_EPOCHS

    demo = commands.add_parser(
        "demo",
        help="train an NCP on a built-in task, evaluate, export and report it",
        description="Train a CfC with an AutoNCP wiring to forecast irregularly sampled "
        "oscillations; write the checkpoint, a Core ML package, metrics.json, plots and "
        "report.md to --out. Exits 1 if the Core ML export fails.",
    )
    demo.add_argument(
        "--out", type=output_folder, default="ncps_demo", help="output folder (default: ncps_demo)"
    )
    demo.add_argument(
        "--epochs",
        type=positive_int,
        default=DEFAULT_EPOCHS,
        help=f"training epochs (default: {DEFAULT_EPOCHS})",
    )
    demo.add_argument("--seed", type=integer, default=0, help="random seed (default: 0)")
    demo.add_argument(
        "--no-export", action="store_true", help="skip the Core ML export and its check"
    )
    demo.add_argument(
        "--no-progress", action="store_true", help="log every few epochs instead of a bar"
    )
    demo.add_argument(
        "--no-baselines",
        action="store_true",
        help="skip the same-size GRU and LSTM baselines (most of the demo's time on a CPU)",
    )
    demo.add_argument("--overwrite", action="store_true", help="replace the run that --out holds")
    demo.add_argument(
        "--resume",
        action="store_true",
        help="continue the training saved in --out (same --epochs and --seed)",
    )
    demo.set_defaults(handler=_demo)


def _add_policies_parser(commands: argparse._SubParsersAction) -> None:
    from .policies import MODEL_KINDS, TASKS

    policies = commands.add_parser(
        "policies",
        help="train NCP policies by imitation, evaluate them closed-loop, deploy and inspect",
        description="Train a CfC-NCP, an LTC-NCP and same-size GRU, LSTM and MLP baselines "
        "on Gymnasium control tasks by behaviour cloning and DAgger; evaluate them over "
        "seeded episodes, clean, with observation noise and with irregular sampling; run "
        "the exported CfC-NCP in the loop; draw its circuit; measure the per-step latency "
        "against the reference ncps model. Writes report.md and the rest to --out. Needs "
        "the control extra (gymnasium).",
    )
    policies.add_argument(
        "--out",
        type=output_folder,
        default="ncps_policies",
        help="output folder (default: ncps_policies)",
    )
    policies.add_argument(
        "--tasks", nargs="+", choices=list(TASKS), default=list(TASKS), help="tasks (default: all)"
    )
    policies.add_argument(
        "--models",
        nargs="+",
        choices=MODEL_KINDS,
        default=list(MODEL_KINDS),
        help="policy models (default: all)",
    )
    policies.add_argument(
        "--seeds", type=positive_int, default=20, help="evaluation episodes (default: 20)"
    )
    policies.add_argument(
        "--seed", type=natural, default=0, help="seed of every model's training (default: 0)"
    )
    policies.add_argument(
        "--quick", action="store_true", help="a few seconds of training per model (a smoke run)"
    )
    policies.add_argument("--no-export", action="store_true", help="skip the Core ML deployment")
    policies.add_argument("--no-figures", action="store_true", help="skip the circuit figures")
    policies.add_argument(
        "--no-latency", action="store_true", help="skip the latency against the reference"
    )
    policies.add_argument("--overwrite", action="store_true", help="replace the run --out holds")
    policies.set_defaults(handler=_policies)


def _add_kernels_parser(commands: argparse._SubParsersAction) -> None:
    kernels = commands.add_parser(
        "kernels",
        help="build the fused CPU kernels now, say whether they run here, or clear their cache",
        description="'build' compiles the kernels for this machine and proves them against "
        "MLX operations (what the first model call would do; exit 1 if they cannot be used), "
        "'status' says where they are cached and whether they run here, 'clear' removes "
        "the cached builds.",
    )
    kernels.add_argument("action", choices=["build", "status", "clear"], metavar="action")
    kernels.set_defaults(handler=_kernels)


def _add_monitor_parser(commands: argparse._SubParsersAction) -> None:
    monitor = commands.add_parser(
        "monitor", help="live view of memory, bandwidth and utilization, or a saved run's report"
    )
    monitor.add_argument("action", nargs="?", choices=["live", "report"], default="live")
    monitor.add_argument(
        "run", nargs="?", type=existing_file, help="a run saved as .jsonl or .csv (for 'report')"
    )
    monitor.add_argument(
        "--interval", type=positive_number, default=0.5, help="seconds between samples"
    )
    monitor.add_argument(
        "--duration", type=positive_number, default=None, help="stop after this many s"
    )
    monitor.add_argument(
        "--backends",
        type=monitor_backends,
        default="auto",
        help="'auto' or names, comma-separated",
    )
    monitor.add_argument(
        "--pid",
        type=positive_int,
        default=None,
        help="live: show the CPU and memory of this process (your training) and end when "
        "it exits; without it they are the monitor's own",
    )
    monitor.add_argument("--out", default=None, help="live: save the run here; report: folder")
    monitor.set_defaults(handler=_monitor)


def _add_export_parser(commands: argparse._SubParsersAction) -> None:
    from .export.coreml import COMPUTE_UNITS, KINDS, PRECISIONS

    export = commands.add_parser(
        "export", help="export a checkpoint to Core ML (needs the 'export' extra)"
    )
    export.add_argument(
        "checkpoint",
        type=existing_file,
        help="a checkpoint written by ncps-mlx train, ncps_mlx.fit or ncps_mlx.save",
    )
    export.add_argument("--out", type=package_path, required=True, help="the .mlpackage to write")
    export.add_argument("--kind", choices=KINDS, default="step")
    export.add_argument("--precision", choices=PRECISIONS, default="float16")
    export.add_argument("--batch-size", type=positive_int, default=1)
    export.add_argument(
        "--seq-len", type=positive_int, default=None, help="steps (kind 'sequence')"
    )
    export.add_argument("--compute-units", choices=list(COMPUTE_UNITS), default="cpu_and_ne")
    export.add_argument("--target", default=None, help="minimum deployment target, e.g. macOS14")
    export.add_argument(
        "--timespans",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add the 'dt' input (elapsed time of each step), or leave it out; default: as "
        "the checkpoint says its model was trained (ncps-mlx train and ncps_mlx.fit record "
        "it), else without",
    )
    export.add_argument(
        "--verify", action="store_true", help="check the saved package against the checkpoint"
    )
    export.set_defaults(handler=_export)


def _read_run_config(args: argparse.Namespace):
    """The validated config, or None after printing its problems."""
    from .config import ConfigError, read_config

    try:
        return read_config(
            args.config,
            output_dir=args.out,
            resume=args.resume or None,
            overwrite=args.overwrite or None,
        )
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
        # Problems only the data itself shows (or a diverged run): the run failed.
        raise CommandFailed(str(error)) from error
    return 0


def _add_run_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a TOML run config (see ncps_mlx.config)")
    parser.add_argument("--out", default=None, help="output folder, instead of output.dir")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in the output folder"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the run the output folder holds"
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

    again = [arg for arg in argv if arg not in ("--resume", "--overwrite")]
    command = shlex.join(["ncps-mlx", *again, "--resume"])
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
    """Run the `ncps-mlx` command: the entry point of the console script.

    A mistake a user can act on prints one line on stderr instead of a traceback, and
    Ctrl-C prints one line too (see the module's description).

    Args:
        argv: The arguments after the program name; `sys.argv[1:]` when None.

    Returns:
        The exit code: 0 on success, 2 when the command line cannot run as typed, 1 when
        the command ran and failed, 130 when interrupted.
    """
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
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # argparse has said what was wrong, or printed --help
        return int(exit.code or 0)
    args.argv = argv  # how train and demo say to resume
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return USAGE
    try:
        return args.handler(args)
    except Exception as error:
        code = _exit_code(error)
        if code is None or args.debug:  # a bug keeps its traceback
            raise
        print(f"ncps-mlx {args.command}: {_message(error)}", file=sys.stderr)
        return code


def _exit_code(error: Exception) -> int | None:
    """The exit code of an error a user can act on; None for a bug."""
    from .errors import ConfigError, NCPSError

    if isinstance(error, UsageError | ConfigError):
        return USAGE
    if isinstance(error, CommandFailed | NCPSError | OSError):  # the package's, the disk's
        return FAILED
    if isinstance(error, ValueError):  # the package's checks of values the user gave
        return USAGE
    if _install_line(error) is not None:
        return FAILED
    return None


#: How to install each optional dependency whose absence an ImportError may report.
_INSTALL = {
    "coremltools": "pip install 'ncps-mlx[export]'",
    "matplotlib": "pip install 'ncps-mlx[plot]'",
    "aeon": "pip install 'ncps-mlx[data]'",
    "psutil": "pip install 'ncps-mlx[monitor]'",
    "gymnasium": "pip install 'ncps-mlx[control]'",
    "tomli": "pip install tomli",
}


def _install_line(error: BaseException | None) -> str | None:
    """For a missing optional dependency, the one line that installs it; else None."""
    if not isinstance(error, ImportError):
        return None
    first = str(error).partition("\n")[0]
    if "pip install" in first:  # the package's own message names the extra
        return _OWNER.sub("", first)
    name = (error.name or "").partition(".")[0]
    if name in _INSTALL:
        return f"{name} is not installed: {_INSTALL[name]}"
    return _install_line(error.__cause__)


#: The "[function] " that starts the package's ValueErrors: a function the user did not call.
_OWNER = re.compile(r"^\[[\w.]+\] ")


def _message(error: Exception) -> str:
    install = _install_line(error)
    if install is not None:
        return install
    if isinstance(error, OSError) and error.strerror:  # not "[Errno 17] ..."
        return f"{error.strerror}: {error.filename!r}" if error.filename else error.strerror
    return _OWNER.sub("", str(error))


if __name__ == "__main__":
    sys.exit(main())
