"""Configure and build the native runtime with CMake, once per build folder: :func:`build`.

The tests call it (it is a no-op when the build is up to date); ``.ci/native.sh`` does the same from the
shell and also fetches the ONNX Runtime headers this helper expects to find.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).resolve().parent
BUILD_ROOT = SOURCE / "build"  # git-ignored (runtime/native/.gitignore)
KINDS: dict[str, tuple[list[str], str]] = {  # build folder -> (cmake options, target)
    "release": (["-DCMAKE_BUILD_TYPE=Release"], "all"),
    "asan": (["-DCMAKE_BUILD_TYPE=Debug", "-DPVLM_SANITIZE=ON", "-DPVLM_BUILD_CLI=OFF"], "pvlm-abi-test"),
}


class BuildUnavailable(RuntimeError):
    """A prerequisite (cmake, g++, ONNX Runtime headers, nlohmann-json) is missing; the message says which."""


class BuildFailed(RuntimeError):
    """CMake or the compiler failed; the message ends with their output."""


@dataclass(frozen=True)
class NativeBuild:
    """A built folder: the library, the programs it has, and what CMake used (``pvlm-build.json``)."""

    directory: Path
    library: Path
    cli: Path | None
    abi_test: Path | None
    info: dict[str, Any]


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def build(kind: str = "release", *, jobs: int = 2, python: str | None = None, timeout: float = 1800) -> NativeBuild:
    """Configure (first time) and build ``BUILD_ROOT/kind``; ``kind`` is ``release`` or ``asan``.

    ONNX Runtime comes from ``$ONNXRUNTIME_ROOT``, the system, or ``python``'s onnxruntime wheel with the
    headers .ci/native.sh extracts (see cmake/onnxruntime.cmake). Concurrent callers wait on a file lock.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    missing = [tool for tool in ("cmake", "g++") if shutil.which(tool) is None]
    if missing:
        raise BuildUnavailable(f"{' and '.join(missing)} not found: the native runtime needs CMake and a C++17 compiler")
    options, target = KINDS[kind]
    directory = BUILD_ROOT / kind
    BUILD_ROOT.mkdir(parents=True, exist_ok=True)
    with open(BUILD_ROOT / f".{kind}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (directory / "CMakeCache.txt").is_file():
            cmd = ["cmake", "-S", str(SOURCE), "-B", str(directory), f"-DPVLM_PYTHON={python or sys.executable}",
                   *options]
            if os.environ.get("ONNXRUNTIME_ROOT"):
                cmd.append(f"-DONNXRUNTIME_ROOT={os.environ['ONNXRUNTIME_ROOT']}")
            proc = _run(cmd, timeout)
            if proc.returncode != 0:
                shutil.rmtree(directory, ignore_errors=True)
                out = proc.stdout + proc.stderr
                if "ONNX Runtime not found" in out:
                    raise BuildUnavailable("ONNX Runtime headers not found: run .ci/native.sh (extracts them for the "
                                           "onnxruntime wheel's library) or set ONNXRUNTIME_ROOT")
                if "nlohmann_json not found" in out:
                    raise BuildUnavailable("nlohmann_json not found: apt-get install nlohmann-json3-dev")
                raise BuildFailed(f"cmake configure failed:\n{out[-4000:]}")
        proc = _run(["cmake", "--build", str(directory), "-j", str(jobs), "--target", target], timeout)
        if proc.returncode != 0:
            raise BuildFailed(f"cmake --build {directory} failed:\n{(proc.stdout + proc.stderr)[-6000:]}")
    info = json.loads((directory / "pvlm-build.json").read_text())
    programs = {name: directory / name for name in ("pvlm-describe-native", "pvlm-abi-test")}
    return NativeBuild(directory, directory / "libpvlm.so",
                       programs["pvlm-describe-native"] if programs["pvlm-describe-native"].is_file() else None,
                       programs["pvlm-abi-test"] if programs["pvlm-abi-test"].is_file() else None, info)


__all__ = ["BUILD_ROOT", "BuildFailed", "BuildUnavailable", "NativeBuild", "build"]
