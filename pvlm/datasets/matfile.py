"""Reading the annotation ``.mat`` files of PA-100K, RAP v2 and Market-1501 (SciPy's ``loadmat``).

Loaded with ``squeeze_me`` and ``struct_as_record=False``: a struct is an object with attributes, a cell of
strings an array of ``str`` (or one ``str`` when it has a single entry). Every error names the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class SourceError(ValueError):
    """A dataset source (annotation file, label file, image folder) that is missing, unreadable or not laid out
    as the dataset's release has it; the message names the file (``file:line`` where there is a line)."""


def load_mat(path: Path) -> dict[str, Any]:
    """The variables of a MATLAB v5 file (v7.3/HDF5 files are refused with a line that says so)."""
    try:
        from scipy.io import loadmat
        from scipy.io.matlab import MatReadError
    except ModuleNotFoundError:  # pragma: no cover - scipy comes with the video extra
        raise SourceError(f"{path}: reading .mat annotations needs SciPy: pip install scipy") from None
    if not path.is_file():
        raise SourceError(f"{path}: no such annotation file")
    try:
        return loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except NotImplementedError:
        raise SourceError(f"{path}: a MATLAB v7.3 file; save it as v7 (-v7) to import it") from None
    except (MatReadError, ValueError, TypeError, OSError) as e:
        raise SourceError(f"{path}: not a readable .mat file ({e})") from None


def field(obj: Any, name: str, path: Path) -> Any:
    """``obj.name`` of a loaded struct (or ``obj[name]`` of the top-level dict); a missing one names the file."""
    try:
        return obj[name] if isinstance(obj, dict) else getattr(obj, name)
    except (KeyError, AttributeError):
        raise SourceError(f"{path}: no '{name}' in the annotation (is this the dataset's release file?)") from None


def strings(value: Any) -> list[str]:
    """A loaded cell of strings (or a single string) as a list."""
    if isinstance(value, str):
        return [value]
    return [str(np.asarray(v).ravel()[0]) if not isinstance(v, str) else v for v in np.atleast_1d(value).ravel()]


def matrix(value: Any, rows: int, path: Path, name: str) -> np.ndarray:
    """A label matrix of ``rows`` rows (a single row comes back squeezed to 1-D and is reshaped)."""
    m = np.asarray(value)
    if m.ndim == 1 and (rows == 1 or m.size == rows):
        m = m.reshape(rows, -1)
    if m.ndim != 2 or m.shape[0] != rows:
        raise SourceError(f"{path}: '{name}' has shape {np.shape(value)}, expected {rows} rows")
    return m


def items(value: Any) -> list[Any]:
    """A loaded struct array or cell as a list (one element comes back bare)."""
    return list(np.atleast_1d(value).ravel()) if isinstance(value, np.ndarray) else [value]


__all__ = ["SourceError", "field", "items", "load_mat", "matrix", "strings"]
