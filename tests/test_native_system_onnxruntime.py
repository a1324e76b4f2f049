"""CMake finds an ONNX Runtime installed as a system package (cmake/onnxruntime.cmake, choices 1 and 2).

Debian's ``libonnxruntime-dev`` (the .deb that ``.ci/native.sh`` extracts for its headers) is laid out in a
temporary prefix with the onnxruntime wheel's library in the place of Debian's ``libonnxruntime1.21``, so
its CMake package (``lib/<multiarch>/cmake/onnxruntime``) and its files are exactly what a system install
holds. The prefix is named through ``CMAKE_PREFIX_PATH``, which CMake searches with the same calls, before
``/usr``; as ``ONNXRUNTIME_ROOT`` it is the first choice instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

SOURCE = Path(__file__).resolve().parents[1] / "runtime" / "native"
DEB_TREE = SOURCE / "build" / "deps" / "onnxruntime-headers" / "usr"
MULTIARCH = "x86_64-linux-gnu"  # the extracted .deb is Debian's amd64 package


@pytest.fixture(scope="module")
def prefix(tmp_path_factory) -> Path:
    """A system-like install: Debian's headers, CMake package and pkg-config file, and the wheel's library."""
    if shutil.which("cmake") is None or shutil.which("g++") is None:
        pytest.skip("cmake and g++ are needed")
    if not (DEB_TREE / "lib" / MULTIARCH / "cmake" / "onnxruntime" / "onnxruntimeConfig.cmake").is_file():
        pytest.skip(f"no extracted libonnxruntime-dev under {DEB_TREE}: run .ci/native.sh")
    wheel_lib = sorted((Path(ort.__file__).parent / "capi").glob("libonnxruntime.so.1.*"))
    if not wheel_lib:
        pytest.skip("the onnxruntime wheel has no libonnxruntime.so.1.*")
    root = tmp_path_factory.mktemp("system-ort") / "usr"
    shutil.copytree(DEB_TREE, root, symlinks=True)
    libdir = root / "lib" / MULTIARCH
    # Debian's runtime package: libonnxruntime.so.1.21.0 and the links to it; the wheel's library has the
    # SONAME libonnxruntime.so.1, so the loader needs that name too.
    shutil.copy2(wheel_lib[-1], libdir / "libonnxruntime.so.1.21.0")
    for link in ("libonnxruntime.so.1.21", "libonnxruntime.so.1"):
        (libdir / link).symlink_to("libonnxruntime.so.1.21.0")
    return root


def _configure(build: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Configure the library alone; the wheel route is closed (no headers), so only choices 1 and 2 remain."""
    proc = subprocess.run(["cmake", "-S", str(SOURCE), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                           "-DPVLM_BUILD_CLI=OFF", "-DPVLM_BUILD_TESTS=OFF", f"-DPVLM_ORT_HEADERS={build}/none",
                           *args], capture_output=True, text=True, timeout=300, check=False)
    info = json.loads((build / "pvlm-build.json").read_text()) if proc.returncode == 0 else {}
    return proc, info


@pytest.mark.parametrize("with_cmake_package", [True, False], ids=["cmake-package", "headers-and-library"])
def test_configure_finds_the_system_package(prefix, tmp_path, with_cmake_package):
    if not with_cmake_package:  # a system with the files but no CMake package: found in the default paths
        shutil.rmtree(prefix.parent / "no-package", ignore_errors=True)
        bare = shutil.copytree(prefix, prefix.parent / "no-package" / "usr", symlinks=True)
        shutil.rmtree(bare / "lib" / MULTIARCH / "cmake")
        where = bare
    else:
        where = prefix
    proc, info = _configure(tmp_path / "build", f"-DCMAKE_PREFIX_PATH={where}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pvlm: ONNX Runtime from the system" in proc.stdout
    assert info["onnxruntime_source"] == "system"
    assert info["onnxruntime_library"].startswith(str(where / "lib" / MULTIARCH))
    assert info["onnxruntime_headers"].rstrip("/") == str(where / "include" / "onnxruntime")


def test_configure_takes_the_prefix_as_onnxruntime_root(prefix, tmp_path):
    proc, info = _configure(tmp_path / "build", f"-DONNXRUNTIME_ROOT={prefix}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"pvlm: ONNX Runtime from an install prefix (ONNXRUNTIME_ROOT={prefix})" in proc.stdout
    assert info["onnxruntime_source"] == "root" and info["onnxruntime_library"].startswith(str(prefix))


def test_a_library_built_on_the_system_package_describes(prefix, tiny_bundle, tmp_path):
    """Built against the system package, libpvlm loads that package's library and gives the tokens the
    release build gives."""
    build = tmp_path / "build"
    proc, _ = _configure(build, f"-DCMAKE_PREFIX_PATH={prefix}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = subprocess.run(["cmake", "--build", str(build), "-j", "2", "--target", "pvlm"], capture_output=True,
                          text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    script = (
        "import sys, json, numpy as np\n"
        "from runtime.native.library import NativeDescriber\n"
        "d = NativeDescriber(sys.argv[1], library=sys.argv[2])\n"
        "px = np.load(sys.argv[3])\n"
        "rows, _ = d.generate(px, 12, stop_at_eos=False)\n"
        "maps = [l.split()[-1] for l in open('/proc/self/maps') if 'libonnxruntime' in l]\n"
        "print(json.dumps({'tokens': [r.tokens for r in rows], 'ort': sorted(set(maps))}))\n")
    from runtime import Describer
    from runtime.bundle import Bundle

    pre = Bundle.load(tiny_bundle).preprocessing
    px = np.random.default_rng(0).standard_normal((3, 3, pre.height, pre.width)).astype(np.float32)
    np.save(tmp_path / "px.npy", px)
    out = subprocess.run([sys.executable, "-c", script, str(tiny_bundle), str(build / "libpvlm.so"),
                          str(tmp_path / "px.npy")],
                         capture_output=True, text=True, timeout=300, check=False,
                         cwd=Path(__file__).resolve().parents[1], env={**os.environ, "PVLM_NATIVE_LIB": ""})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.splitlines()[-1])
    assert got["ort"] and all(p.startswith(str(prefix)) for p in got["ort"]), got["ort"]
    want, _ = Describer(tiny_bundle, backend="onnxruntime-cpu").generate_ids(px, 12, stop_at_eos=False)
    assert got["tokens"] == want
