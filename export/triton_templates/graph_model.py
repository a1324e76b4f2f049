"""Triton Python-backend model running one PersonVLM graph with ONNX Runtime (``--flavor python``).

Copied to ``pvlm_encoder/1/model.py`` and ``pvlm_decoder/1/model.py`` by ``pvlm-export triton``
for machines whose Triton has no ONNX Runtime backend (e.g. the tritonserver of nvidia-pytriton).
Inputs and outputs are the ones its ``config.pbtxt`` declares (the bundle manifest's graph
entry); the ONNX file is the ``onnx_file`` parameter; ``intra_op_threads`` (0: ONNX Runtime's
default) limits its CPU threads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """One ONNX Runtime session; each request is run as sent (max_batch_size 0)."""

    def initialize(self, args: dict) -> None:
        """Open the session on CUDA for GPU instances when onnxruntime-gpu is present, else on CPU."""
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.name = config["name"]
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = int(params.get("intra_op_threads") or 0)
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if args.get("model_instance_kind") == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers = [("CUDAExecutionProvider", {"device_id": int(args.get("model_instance_device_id", 0))}),
                         "CPUExecutionProvider"]
        path = Path(args["model_repository"]) / args["model_version"] / params["onnx_file"]
        self.session = ort.InferenceSession(str(path), opts, providers=providers)

    def execute(self, requests: list) -> list:
        """Run each request; an error answers only the request that caused it."""
        responses = []
        for request in requests:
            try:
                feeds = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.inputs}
                wanted = [n for n in request.requested_output_names() if n in self.outputs] or self.outputs
                values = self.session.run(wanted, feeds)
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(n, np.ascontiguousarray(v)) for n, v in zip(wanted, values)]))
            except Exception as e:  # noqa: BLE001 - reported to the caller, never crashes the stub
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"{self.name}: {type(e).__name__}: {e}")))
        return responses
