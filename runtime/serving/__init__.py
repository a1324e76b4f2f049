"""Serving: ``pvlm-serve``, a Triton Inference Server (PyTriton) with dynamic batching in front of
:class:`runtime.Describer` (:mod:`.server`), and the runner of a ``pvlm-export triton`` model repository.

Built on the runtime's base (bundle, preprocessing, Describer); PyTriton is imported only when a server starts.
"""
