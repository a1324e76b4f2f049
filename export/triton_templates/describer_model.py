"""Triton Python-backend model ``pvlm_describer`` (copied to ``pvlm_describer/1/model.py``).

Dynamic batching delivers several requests per ``execute``; their images are decoded here, then
one ``runtime.Describer`` call describes the whole batch over ``TritonBlsBackend`` (BLS calls to
``pvlm_encoder`` and ``pvlm_decoder``): the runtime's own preprocessing, greedy loop (dropping
finished rows), detokenising and attribute parsing. The ``runtime`` package beside this file is a
copy of the toolkit's: the repository needs only numpy and pillow in Triton's Python (plus
onnxruntime for ``--flavor python``).

Per request, send exactly one of
  IMAGE  UINT8 [k, n]       encoded JPEG/PNG bytes (k images of n bytes; usually k = 1)
  RAW    UINT8 [k, H, W, 3] RGB pixels
and receive TEXT [k, 1] (UTF-8), ATTRIBUTES [k, 1] (JSON) and ALTERNATIVES [k, 1] (JSON: every returned
sequence, best first, with its score and attributes). A bad request is answered with an error naming
what is wrong; the other requests of its batch are unaffected.

Request parameters choose the decoding (``runtime.decoding.REQUEST_PARAMETERS``: ``beams``, ``n_best``,
``sample``, ``temperature``, ``top_k``, ``top_p``, ``seed``, ``length_penalty``, ``no_repeat_ngram_size``,
or ``decoding`` = ``beams3``/``original``/...); without them, greedy. Requests that decode alike run
together; sampled requests run one at a time, so that image i of a request draws from its own seed
(``[seed, i, draw]``) whatever it was batched with.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))  # the runtime copy beside this file, not whatever is installed

from runtime.backends.triton_bls import TritonBlsBackend  # noqa: E402
from runtime.bundle import Bundle  # noqa: E402
from runtime.decoding import DecodingOptions, decoding_from_parameters  # noqa: E402
from runtime.describer import Describer  # noqa: E402
from runtime.preprocess import MAX_IMAGE_BYTES, InputError, image_from_bytes, to_rgb  # noqa: E402


class TritonPythonModel:
    """IMAGE/RAW -> TEXT, ATTRIBUTES through a ``Describer`` whose backend is BLS."""

    def initialize(self, args: dict) -> None:
        """Read the manifest copied beside this file and the parameters of ``config.pbtxt``."""
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        bundle = Bundle.load(_HERE, verify=False)  # only the manifest travels here; graphs are models
        backend = TritonBlsBackend(bundle.model_config, params.get("encoder_model") or "pvlm_encoder",
                                   params.get("decoder_model") or "pvlm_decoder", pb_utils=pb_utils)
        max_new_tokens = int(params.get("max_new_tokens") or 0) or None  # None: the bundle's limit
        self.describer = Describer(bundle, backend, max_new_tokens=max_new_tokens, on_error="raise")
        self.max_bytes = int(params.get("max_image_bytes") or MAX_IMAGE_BYTES)

    def finalize(self) -> None:
        """Unloading: close the describer (and its backend)."""
        self.describer.close()

    def _images(self, request: object) -> list:
        """One request -> RGB PIL image per image it sent; InputError names the problem."""
        image = pb_utils.get_input_tensor_by_name(request, "IMAGE")
        raw = pb_utils.get_input_tensor_by_name(request, "RAW")
        if (image is None) == (raw is None):
            raise InputError("send exactly one of IMAGE (encoded JPEG/PNG bytes, UINT8 [1, n]) "
                             "or RAW (UINT8 [1, H, W, 3])")
        if image is not None:
            data = image.as_numpy()
            data = data.reshape(1, -1) if data.ndim == 1 else data.reshape(data.shape[0], -1)
            if data.shape[0] == 0 or data.shape[1] == 0:
                raise InputError("input 0 (IMAGE): empty")
            images = [image_from_bytes(row.tobytes(), i, self.max_bytes) for i, row in enumerate(data)]
        else:
            data = raw.as_numpy()
            if data.ndim != 4 or data.shape[0] == 0:
                raise InputError(f"input 0 (RAW): expected UINT8 [k, H, W, 3], got shape {list(data.shape)}")
            images = [to_rgb(row, i) for i, row in enumerate(data)]
        return images

    def _decoding(self, request: object) -> DecodingOptions:
        """The request's decoding from its parameters (JSON text in Triton's Python backend); ValueError if bad."""
        raw = request.parameters() if hasattr(request, "parameters") else None
        try:
            params = json.loads(raw) if isinstance(raw, (str, bytes)) and raw else (raw or {})
        except ValueError:
            raise ValueError("request parameters are not valid JSON") from None
        return decoding_from_parameters(params if isinstance(params, dict) else {}, self.describer.decoding)

    def execute(self, requests: list) -> list:
        """Decode every good request of the batch, those that decode alike together; bad ones get their own error."""
        responses: list = [None] * len(requests)
        groups: dict[DecodingOptions, list[tuple[int, list]]] = {}
        for r, request in enumerate(requests):
            try:
                opts = self._decoding(request)
                decoded = self._images(request)
            except (InputError, ValueError) as e:
                responses[r] = _error(str(e), invalid_argument=True)
                continue
            groups.setdefault(opts, []).append((r, decoded))
        for opts, members in groups.items():
            # sampling seeds by an image's index within the call: one request per call keeps them its own
            for call in ([[m] for m in members] if opts.mode == "sample" else [members]):
                self._describe(call, opts, responses)
        return responses

    def _describe(self, members: list[tuple[int, list]], opts: DecodingOptions, responses: list) -> None:
        """Describe the images of ``members`` (request index, images) in one call; fill their responses."""
        images = [img for _, decoded in members for img in decoded]
        try:
            described = self.describer.describe(images, decoding=opts)  # batches of up to the bundle's max_batch
        except Exception as e:  # noqa: BLE001 - a graph model failed: every request of the call hears why
            for r, _ in members:
                responses[r] = _error(f"pvlm_describer: {type(e).__name__}: {e}")
            return
        i = 0
        for r, decoded in members:
            mine = described[i:i + len(decoded)]
            i += len(decoded)
            responses[r] = pb_utils.InferenceResponse(output_tensors=[
                _strings("TEXT", [d.text for d in mine]),
                _strings("ATTRIBUTES", [json.dumps(d.attributes, sort_keys=True) for d in mine]),
                _strings("ALTERNATIVES", [json.dumps(_alternatives(d), sort_keys=True) for d in mine]),
            ])


def _alternatives(description: object) -> list[dict]:
    """Every returned sequence of a Description, best first: text, score (None for greedy), attributes."""
    return [{"text": a.text, "score": None if a.score is None else round(a.score, 6), "attributes": a.attributes}
            for a in description.alternatives]


def _strings(name: str, values: list[str]) -> object:
    """A (k, 1) TYPE_STRING output tensor of UTF-8 strings."""
    return pb_utils.Tensor(name, np.array([[v.encode()] for v in values], dtype=np.object_))


def _error(message: str, invalid_argument: bool = False) -> object:
    """An error response; a bad input is INVALID_ARG (HTTP 400) where this Triton's Python backend has codes."""
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None) if invalid_argument else None
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)
