"""An installed native runtime is usable from C++ as docs/native.md says: the page's example compiles against
the install through pkg-config and through CMake's find_package, and describes crops of a frame."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

DOC = Path(__file__).resolve().parents[1] / "docs" / "native.md"


def example_source() -> str:
    """The C++ example of docs/native.md (the code block after its "Example" heading)."""
    text = DOC.read_text()
    section = text[text.index("## Example"):]
    return re.search(r"```cpp\n(.*?)```", section, re.DOTALL).group(1)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    from runtime.native.compile import BuildUnavailable, build

    try:
        native = build("release")
    except BuildUnavailable as e:
        pytest.skip(f"native runtime not built: {e}")
    prefix = tmp_path_factory.mktemp("native-install") / "prefix"
    proc = subprocess.run(["cmake", "--install", str(native.directory), "--prefix", str(prefix)], capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return native, prefix


def _ppm(path: Path, frame: np.ndarray) -> None:
    h, w, _ = frame.shape
    path.write_bytes(f"P6\n{w} {h}\n255\n".encode() + frame.tobytes())


def test_example_links_with_pkg_config_and_cmake(installed, tiny_bundle, tmp_path):
    native, prefix = installed
    libdir = next(p.parent for p in prefix.rglob("libpvlm.so"))
    assert (prefix / "include" / "pvlm.h").is_file() and (prefix / "include" / "pvlm.hpp").is_file()
    assert (libdir / "cmake" / "pvlm" / "pvlmConfig.cmake").is_file() and (libdir / "pkgconfig" / "pvlm.pc").is_file()
    src = tmp_path / "describe_crops.cpp"
    src.write_text(example_source())

    env = {**os.environ, "PKG_CONFIG_PATH": str(libdir / "pkgconfig")}
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "pvlm"], capture_output=True, text=True, env=env,
                           check=True).stdout.split()
    exe_pc = tmp_path / "describe_crops_pc"
    proc = subprocess.run(["g++", "-std=c++17", "-O1", str(src), "-o", str(exe_pc), *flags], capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(src, project / "describe_crops.cpp")
    (project / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.18)\nproject(describe_crops CXX)\nfind_package(pvlm 0.1 REQUIRED)\n"
        "add_executable(describe_crops describe_crops.cpp)\n"
        "target_link_libraries(describe_crops PRIVATE pvlm::pvlm)\n")
    for cmd in (["cmake", "-S", str(project), "-B", str(project / "build"), f"-DCMAKE_PREFIX_PATH={prefix}"],
                ["cmake", "--build", str(project / "build")]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    exe_cmake = project / "build" / "describe_crops"

    frame = np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    _ppm(tmp_path / "frame.ppm", frame)
    boxes = ["0,0,90,120", "10.5,20,40,110", "44,3,52,117"]
    outputs = []
    for exe in (exe_pc, exe_cmake):
        proc = subprocess.run([str(exe), str(tiny_bundle), str(tmp_path / "frame.ppm"), *boxes], capture_output=True,
                              text=True, timeout=300, check=False,
                              env={k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"})
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout)
    assert outputs[0] == outputs[1]
    from runtime.native.library import NativeDescriber

    with NativeDescriber(tiny_bundle, library=native.library) as d:
        texts = [x.text for x in d.describe_crops(frame, [tuple(map(float, b.split(","))) for b in boxes])]
    assert outputs[0].splitlines() == [f"{b}\t{t}" for b, t in zip(boxes, texts)]

    proc = subprocess.run([str(exe_pc), str(tmp_path / "no-bundle"), str(tmp_path / "frame.ppm"), "0,0,1,1"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("error: PVLM_ERR_BUNDLE_MISSING: ")


@pytest.mark.parametrize("layout", ["release-archive", "debian"])
def test_cmake_uses_a_named_onnxruntime_prefix_first(installed, tmp_path, layout):
    """-DONNXRUNTIME_ROOT wins over the system and the wheel, in either layout, and the log says so."""
    native, _ = installed
    headers = Path(native.info["onnxruntime_headers"])
    library = Path(os.path.realpath(native.info["onnxruntime_library"]))
    root = tmp_path / "ort"
    include, lib = ((root / "include", root / "lib") if layout == "release-archive"
                    else (root / "include" / "onnxruntime", root / "lib" / "x86_64-linux-gnu"))
    include.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(headers, include)
    lib.mkdir(parents=True)
    (lib / "libonnxruntime.so").symlink_to(library)
    build_dir = tmp_path / "build"
    proc = subprocess.run(["cmake", "-S", str(Path(native.directory).parents[1]), "-B", str(build_dir),
                           f"-DONNXRUNTIME_ROOT={root}", "-DPVLM_BUILD_CLI=OFF", "-DPVLM_BUILD_TESTS=OFF"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(x for x in proc.stdout.splitlines() if "pvlm: ONNX Runtime from" in x)
    assert f"an install prefix (ONNXRUNTIME_ROOT={root})" in line and str(include) in line
    bad = subprocess.run(["cmake", "-S", str(Path(native.directory).parents[1]), "-B", str(tmp_path / "bad"),
                          f"-DONNXRUNTIME_ROOT={tmp_path / 'nothing'}"], capture_output=True, text=True, timeout=300,
                         check=False)
    assert bad.returncode != 0 and "has no ONNX Runtime" in bad.stdout + bad.stderr
