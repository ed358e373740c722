"""The `gatescope` command line: a click group whose subcommands load lazily.

Each subcommand lives in its own module of this package and is imported only when
it runs, so `gatescope --help` starts fast and the core never pays for Textual or
matplotlib. A `GatescopeError` (bad input) is printed as one line on stderr with
exit status 1, never as a traceback (line breaks and control characters in it escaped); click's
usage errors (an unknown option, a value out of its range) as the same one line with status 2; a
`GatescopeWarning` (a tensor not used, a word mapped to the unknown token) as
``gatescope: warning: ...`` on stderr, every time it is issued. SIGTERM ends a command as Ctrl+C does,
by unwinding it (exit status 143), so the temporary files and folders of what it was writing are removed
(gatescope.files, gatescope.folders).
"""
from __future__ import annotations

import importlib
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    import rich.console

from gatescope.errors import GatescopeError, GatescopeWarning, one_line

# command name -> (module in gatescope.cli, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "inspect": ("inspect", "inspect", "Report on a checkpoint's recurrent modules and gates."),
    "trace": ("trace", "trace", "Record every gate of a model over some input into a trace file."),
    "browse": ("browse", "browse", "Browse a trace file in the terminal."),
    "explain": ("explain", "explain", "One unit's step, term by term, with the model's own numbers."),
    "agreement": ("agreement", "agreement", "Subject-verb agreement accuracy of a language model."),
    "analyze": ("analyze", "analyze", "Find and test the units that track a feature."),
    "samples": ("samples", "samples", "Train or list the bundled sample models."),
    "findings": ("findings", "findings", "Reproduce the docs' findings on the sample models."),
    "convert": ("convert", "convert",
                "Convert a torch, fastai, TorchScript, Keras, ONNX or madmom checkpoint to safetensors."),
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that command runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(f"gatescope.cli.{module}"), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, _, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gatescope")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """gatescope: gate introspection and interpretability for LSTM and GRU networks."""
    ctx.with_resource(warnings_on_stderr())


@contextmanager
def warnings_on_stderr() -> Iterator[None]:
    """While a command runs, print each GatescopeWarning as one line on stderr (not once per place)."""
    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, GatescopeWarning):
            click.echo(f"gatescope: warning: {message}", err=True)
        else:
            default(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        default = warnings.showwarning
        warnings.simplefilter("always", GatescopeWarning)
        warnings.showwarning = show
        yield


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """While a command runs (in the main thread), SIGTERM raises SystemExit(143) instead of ending the
    process where it stands, so cleanups run as they do for Ctrl+C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def unwind(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


UNWRAPPED = 10_000  # the width of a report written to a pipe or a file: as wide as its lines


def report_console() -> rich.console.Console:
    """Where a command prints its report: a terminal's width on a terminal; otherwise (a pipe, a file, a test)
    lines are not wrapped, where rich would break sentences at 80 columns."""
    from rich.console import Console

    if sys.stdout.isatty():
        return Console(highlight=False)
    return Console(highlight=False, soft_wrap=True, width=UNWRAPPED)


def with_formats(command: click.Command) -> click.Command:
    """Put the checkpoint formats gatescope reads (gatescope.checkpoints.formats.READABLE) where the help says
    ``{formats}``: the commands that take a checkpoint say the same, from one list."""
    from gatescope.checkpoints.formats import READABLE

    command.help = (command.help or "").replace("{formats}", READABLE)
    return command


def _taken_by(option: str) -> str:
    """For an option the command does not take: which commands take it (`` It is an option of inspect.``), or ""."""
    def commands(group: click.Group, prefix: str) -> Iterator[tuple[str, click.Command]]:
        for name in group.list_commands(click.Context(group)):
            command = group.get_command(click.Context(group), name)
            yield from commands(command, f"{prefix}{name} ") if isinstance(command, click.Group) else [
                (f"{prefix}{name}", command)]

    names = [name for name, command in commands(cli, "")
             if any(option in p.opts or option in p.secondary_opts for p in command.params)]
    if not names:
        return ""
    return f" It is an option of {', '.join(names)}."


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `gatescope` console script."""
    with sigterm_unwinds():
        _main(argv)


def _main(argv: list[str] | None) -> None:
    try:
        cli.main(args=argv, prog_name="gatescope", standalone_mode=False)
    except GatescopeError as exc:
        click.echo(f"gatescope: error: {one_line(str(exc))}", err=True)
        for line in getattr(exc, "fix", ()):  # code that fixes it (gatescope.checkpoints.formats.ErrorWithFix)
            click.echo(f"  {one_line(line)}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("gatescope: aborted", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:  # a group named alone (`gatescope analyze`): its help
        exc.show()
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # a usage error (an unknown option, a value out of range): status 2
        message = exc.format_message()
        if isinstance(exc, click.NoSuchOption):
            message += _taken_by(exc.option_name)
        context = getattr(exc, "ctx", None)
        if context is not None:
            message += f" (see {context.command_path} --help)"
        click.echo(f"gatescope: error: {one_line(message)}", err=True)  # click quotes most values; this covers the rest
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(1)
