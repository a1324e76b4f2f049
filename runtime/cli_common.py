"""What every ``pvlm-*`` command shares: ``-h``, ``--version``, ``-v/--verbose``, ``-q/--quiet``, error lines.

Torch-free and pvlm-free (it lives in ``runtime`` so that ``pvlm-describe`` and ``pvlm-serve`` can
use it too); ``pvlm``, ``export`` and ``bench`` import it.

The same meaning everywhere:

- ``-q/--quiet``: results and errors only (no progress bar, no info or warning logs);
- default: results, warnings, and a progress bar where the work is long;
- ``-v/--verbose``: one logging level more than the command's default (``-vv``: debug);
- an error is one ``error: ...`` line on stderr (:func:`echo_error`): exit 2 for bad usage or input
  (:class:`CommandError`, click's usage errors, :func:`fail_on_bad_input`), 1 when the environment
  failed (:class:`CommandFailure`; a full disk while writing an output, :func:`writing`);
- a reader that goes away (``pvlm-describe ... | head -1``) ends the command quietly with exit 1.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

DISTRIBUTION = "personvlm-toolkit"

#: ``context_settings`` of every command and group: ``-h`` as well as ``--help``, defaults in the help.
CONTEXT_SETTINGS: dict[str, Any] = {"show_default": True, "help_option_names": ["-h", "--help"]}

# A missing optional package -> the extra that installs it (pyproject.toml's [project.optional-dependencies]).
_EXTRAS = {
    "torch": ("PyTorch", "torch"), "torchvision": ("PyTorch", "torch"), "timm": ("PyTorch", "torch"),
    "onnx": ("onnx", "torch"), "onnxscript": ("onnxscript", "torch"),
    "onnxruntime": ("ONNX Runtime", "cpu"),
    "matplotlib": ("matplotlib", "eval"), "pycocoevalcap": ("pycocoevalcap", "eval"),
    "pytriton": ("PyTriton", "serve"), "tritonclient": ("tritonclient", "serve"),
    "tensorrt": ("TensorRT", "trt"), "polygraphy": ("Polygraphy", "trt"), "coremltools": ("coremltools", "coreml"),
}


def echo_error(message: str) -> None:
    """Print ``error: MESSAGE`` on stderr: the one shape of every command's error lines."""
    click.echo(f"error: {message}", err=True)


class CommandError(click.ClickException):
    """Bad usage or input: one ``error: ...`` line on stderr, exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        echo_error(self.format_message())


class CommandFailure(CommandError):
    """The environment, not the input, stopped the run (a backend unavailable, a runtime failure): exit code 1."""

    exit_code = 1


class MissingPackage(CommandError):
    """An optional package this command needs is not installed: one line naming the extra, exit 2."""


@contextlib.contextmanager
def fail_on_bad_input(*extra: type[BaseException]) -> Iterator[None]:
    """Turn the library's input errors (ValueError, FileNotFoundError, ...) into :class:`CommandError`."""
    try:
        yield
    except (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, PermissionError, *extra) as e:
        raise CommandError(first_line(e)) from None


@contextlib.contextmanager
def writing(target: str, stream: Any = None) -> Iterator[None]:
    """Report an OSError of the block as one line naming the output: ``error: writing TARGET: CAUSE``.

    Exit 1 when the system failed (disk full, I/O error), 2 when the path cannot be used (permission, a
    directory, a missing parent). A closed pipe (EPIPE) passes through for the command to end quietly.
    ``stream``: the file object the block writes (``sys.stdout``); after a failure it is pointed at the
    null device, so that what is still buffered does not fail again when Python exits.
    """
    try:
        yield
    except OSError as e:
        if e.errno == errno.EPIPE:
            raise
        if stream is not None:
            discard_stream(stream)
        usage = (PermissionError, IsADirectoryError, NotADirectoryError, FileNotFoundError, FileExistsError)
        cls = CommandError if isinstance(e, usage) else CommandFailure
        raise cls(f"writing {target}: {os_error_cause(e)}") from None


def os_error_cause(e: OSError) -> str:
    """An OSError's cause in words (``No space left on device``), without the errno number or the path."""
    return e.strerror or first_line(e)


def discard_stream(stream: Any) -> None:
    """Point a real file's descriptor at the null device (nothing more can reach its reader); others are left."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # not backed by a descriptor (click's test runner)
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def parse_size(text: str, option: str) -> tuple[int, int]:
    """``"256x128"`` -> ``(256, 128)`` (height, width); :class:`CommandError` naming ``option`` otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise CommandError(f"{option}: expected HxW such as 256x128, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def missing_package_message(module: str) -> str | None:
    """``"this command needs PyTorch: pip install 'personvlm-toolkit[torch]'"`` for a known optional module."""
    hit = _EXTRAS.get(module.split(".")[0])
    if hit is None:
        return None
    what, extra = hit
    return f"this command needs {what}: pip install '{DISTRIBUTION}[{extra}]'"


def version() -> str:
    """The installed distribution's version (``unknown`` when run from a source tree that is not installed)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def log_level(default: int, verbose: int, quiet: bool) -> int:
    """The logging level ``-v`` (count) and ``-q`` select, starting from the command's ``default``."""
    if quiet:
        return logging.ERROR
    return max(logging.DEBUG, default - 10 * verbose)


def version_option(f: F) -> F:
    """``--version`` alone (for command groups, whose subcommands carry :func:`common_options`)."""
    return click.version_option(version(), "--version", message="%(prog)s %(version)s")(f)


def common_options(default_level: int = logging.WARNING, log_format: str = "%(message)s") -> Callable[[F], F]:
    """Add ``--version``, ``-v/--verbose``, ``-q/--quiet`` to a click callback and configure logging from them.

    Put it below ``@click.command(context_settings=CONTEXT_SETTINGS)``. The callback receives ``quiet``
    (bool) and/or ``verbose`` (count) only if it names them. An optional package missing at run time
    becomes one ``error: this command needs ...`` line and exit 2.
    """

    def decorate(f: F) -> F:
        wanted = inspect.signature(f).parameters

        @functools.wraps(f)
        def wrapper(*args: Any, verbose: int, quiet: bool, **kwargs: Any) -> Any:
            level = log_level(default_level, verbose, quiet)
            logging.basicConfig(level=level, format=log_format)
            logging.getLogger().setLevel(level)
            if "quiet" in wanted:
                kwargs["quiet"] = quiet
            if "verbose" in wanted:
                kwargs["verbose"] = verbose
            try:
                return f(*args, **kwargs)
            except ModuleNotFoundError as e:
                msg = missing_package_message(e.name or "")
                if msg is None:
                    raise
                raise MissingPackage(msg) from None

        wrapper = click.option("-q", "--quiet", is_flag=True,
                               help="Results and errors only: no progress bar, no info or warning logs.")(wrapper)
        wrapper = click.option("-v", "--verbose", count=True, show_default=False,
                               help="More log detail (repeat for debug).")(wrapper)
        return version_option(wrapper)  # type: ignore[return-value]

    return decorate


class _OneLineErrors:
    """``main`` that reports click's usage errors (bad option, value not in a choice list) as one
    ``error: ...`` line with exit code 2, like the commands' own input errors, instead of click's
    usage block."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        run = super().main  # type: ignore[misc]
        if not standalone_mode:
            return run(args, prog_name, complete_var, False, **extra)
        try:
            rv = run(args, prog_name, complete_var, False, **extra)
            with writing("stdout", sys.stdout):  # what is still buffered, while an error can still be reported
                sys.stdout.flush()
        except click.UsageError as e:
            where = f" (see {e.ctx.command_path} -h)" if e.ctx is not None else ""
            echo_error(f"{e.format_message()}{where}")
            sys.exit(e.exit_code)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except OSError as e:
            if e.errno == errno.EPIPE:  # the reader left (``| head``): nothing to report
                discard_stream(sys.stdout)
                sys.exit(1)
            _flush_or_discard(sys.stdout)  # the failure may have been stdout's: it must not fail again at exit
            echo_error(f"{e.filename}: {os_error_cause(e)}" if e.filename else os_error_cause(e))
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def _flush_or_discard(stream: Any) -> None:
    try:
        stream.flush()
    except (OSError, ValueError):
        discard_stream(stream)


class Command(_OneLineErrors, click.Command):
    """``click.command(cls=Command)``: one-line usage errors."""


class Group(_OneLineErrors, click.Group):
    """``click.group(cls=Group)``: one-line usage errors; its subcommands are plain click commands."""


class ChoiceList(click.Choice):
    """A :class:`click.Choice` that also takes comma-separated values (``--backend torch,onnxruntime-cpu``).

    Each value is checked against the choices, which help and shell completion list; the converted
    value keeps the commas, for the command to split.
    """

    name = "choice list"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        parts = [p for p in str(value).replace(",", " ").split() if p]
        if not parts:
            self.fail("empty value", param, ctx)
        return ",".join(super(ChoiceList, self).convert(p, param, ctx) for p in parts)


__all__ = ["CONTEXT_SETTINGS", "ChoiceList", "Command", "CommandError", "CommandFailure", "Group", "MissingPackage",
           "common_options", "discard_stream", "echo_error", "fail_on_bad_input", "first_line", "log_level",
           "missing_package_message", "os_error_cause", "parse_size", "version", "version_option", "writing"]
