"""The model presets' names without importing PyTorch (for ``--preset`` choice lists in torch-free ``--help``)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path


@functools.cache
def preset_names() -> tuple[str, ...]:
    """Keys of ``pvlm.model.PRESETS``, read from model.py's source.

    model.py imports torch at the top, and ``pvlm-bench --help`` must work without it; the test suite
    checks these names against the imported ``PRESETS``.
    """
    tree = ast.parse((Path(__file__).with_name("model.py")).read_text(encoding="utf-8"))
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if isinstance(target, ast.Name) and target.id == "PRESETS" and isinstance(node.value, ast.Dict):
            return tuple(k.value for k in node.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str))
    raise RuntimeError("pvlm/model.py has no PRESETS dict literal")
