"""``model.py`` files copied into the Triton repository by :func:`export.triton.write_triton_repo`.

They run inside Triton's Python backend (``triton_python_backend_utils``), never imported here.
"""
