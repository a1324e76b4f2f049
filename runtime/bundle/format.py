"""The bundle format's tag and version, the bounds on every size a manifest may declare, and its error."""

from __future__ import annotations

BUNDLE_FORMAT = "pvlm-bundle"  # the manifest's format tag, written by export and checked here
BUNDLE_VERSION = 1  # the version export writes
SUPPORTED_VERSIONS = (BUNDLE_VERSION,)
CONTENT_HASH_ALGORITHM = "sha256-jcs"  # sha256 of RFC 8785 canonical JSON, per section and per graph
HASHED_SECTIONS = ("vocab", "special_tokens", "preprocess", "model", "limits")
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")  # ids 0-3 of every vocabulary: pad, bos, eos, unk

# The largest sizes a manifest may declare (docs/bundle.md, "Limits"): each well above what the design's
# models (at most 100M parameters, crops of at most 256 px) need, and each small enough that what the
# runtime allocates from it stays bounded.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_JSON_DEPTH = 32
MAX_BATCH = 4096  # also the largest batch the exporter's dynamic dimension allows
MAX_POSITIONS = 4096
MAX_IMAGE_SIDE = 1024
MAX_VOCAB = 131_072
MAX_TOKEN_CHARS = 128
MAX_LAYERS = 64
MAX_HEADS = 64
MAX_D_MODEL = 8192
MAX_VISUAL_TOKENS = 4096
MAX_DIM = 1 << 20  # any fixed dimension of a declared graph input or output
MAX_RANK = 8
MAX_GRAPH_IO = 4096  # inputs plus outputs of one graph
MEAN_RANGE = (-1000.0, 1000.0)
STD_RANGE = (1e-3, 1000.0)
DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "uint16",
          "uint32", "uint64", "bool")



class BundleError(ValueError):
    """A bundle that is missing, tampered with, or of an unknown format."""
