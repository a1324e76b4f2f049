"""PersonVLM in PyTorch: model, vocabulary, data, training, checkpoints, reference generation."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .generate import generate, trim
from .model import PRESETS, PersonVLM, PersonVLMConfig, count_parameters
from .vocab import Vocabulary

__all__ = [
    "PRESETS", "CheckpointError", "PersonVLM", "PersonVLMConfig", "Vocabulary", "count_parameters",
    "generate", "load_checkpoint", "save_checkpoint", "trim",
]
