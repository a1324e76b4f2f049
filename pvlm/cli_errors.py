"""Shared CLI plumbing: bad input becomes one ``error: ...`` line on stderr and exit code 2."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import click


class InputError(click.ClickException):
    """Bad usage or input: exit code 2."""

    exit_code = 2

    def show(self, file=None) -> None:  # noqa: ANN001 - click's signature
        click.echo(f"error: {self.format_message()}", err=True)


@contextlib.contextmanager
def fail_on_bad_input(*extra: type[BaseException]) -> Iterator[None]:
    """Turn the library's input errors (ValueError, FileNotFoundError, ...) into :class:`InputError`."""
    try:
        yield
    except (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, PermissionError, *extra) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(msg) from None


def parse_size(text: str, option: str) -> tuple[int, int]:
    """``"256x128"`` -> ``(256, 128)`` (height, width)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise InputError(f"{option}: expected HxW such as 256x128, got {text!r}")
    return int(m.group(1)), int(m.group(2))
