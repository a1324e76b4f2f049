"""PersonVLM in PyTorch: model, vocabulary, data, training, checkpoints, reference generation.

``import pvlm`` is light and torch-free (PEP 562): the public names below load their module, and
with it PyTorch, on first use, so torch-free tools (``pvlm.synth``, ``pvlm.vocab``, the CLIs'
``--help``) work on a runtime-only install. No submodule shares a public name: importing such a
submodule would replace the function attribute with the module (``pvlm.generate`` lives in
``pvlm/reference.py`` for that reason).
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "CheckpointError": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "generate": "reference", "trim": "reference",
    "PRESETS": "model", "PersonVLM": "model", "PersonVLMConfig": "model", "count_parameters": "model",
    "Vocabulary": "vocab",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    try:  # submodules as attributes (``pvlm.vocab.SPECIALS`` after a bare ``import pvlm``)
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
