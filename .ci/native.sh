#!/usr/bin/env bash
# Build the native runtime (runtime/native) for the tests: the library, pvlm-describe-native and the C-ABI
# test driver, then the same driver with -fsanitize=address,undefined.
#   .ci/native.sh        # idempotent: caches everything under runtime/native/build/ (git-ignored)
# ONNX Runtime: ONNXRUNTIME_ROOT (an install prefix) or the system's when present; otherwise the library of
# the onnxruntime wheel in the active Python and the C API headers taken out of Debian 13's
# libonnxruntime-dev .deb (apt-get download with a trixie source list kept in the build folder, then
# dpkg -x: nothing from trixie is installed into the system). Missing compiler packages are installed
# from Debian 12 when running as root (nlohmann-json3-dev, libpng-dev, libjpeg-dev).
# A missing prerequisite is a warning (the native tests then skip, saying why); a failed build exits 1.
# PVLM_PYTHON names the Python (default: the active venv, else $PVLM_VENV or ~/.venvs/pvlm, else python3).
# PVLM_NATIVE_ASAN=0 skips the sanitizer build. PVLM_NATIVE_JOBS sets the build parallelism (default 2).
set -uo pipefail
cd "$(dirname "$0")/.."
SRC=runtime/native
OUT="$SRC/build"
DEPS="$OUT/deps"
JOBS="${PVLM_NATIVE_JOBS:-2}"
# the Python whose onnxruntime wheel gives the library: PVLM_PYTHON, the active venv, .ci/run's venv, python3
VENV="${PVLM_VENV:-$HOME/.venvs/pvlm}"
PYTHON="${PVLM_PYTHON:-}"
[ -z "$PYTHON" ] && [ -n "${VIRTUAL_ENV:-}" ] && PYTHON="$VIRTUAL_ENV/bin/python"
[ -z "$PYTHON" ] && [ -x "$VENV/bin/python" ] && PYTHON="$VENV/bin/python"
[ -z "$PYTHON" ] && PYTHON="$(command -v python3 || true)"

warn() { echo "native.sh: warning: $*" >&2; }
note() { echo "native.sh: $*" >&2; }

for tool in cmake g++ dpkg-deb; do
  command -v "$tool" >/dev/null || { warn "$tool not found; the native runtime is not built"; exit 0; }
done

missing=()
[ -f /usr/include/nlohmann/json.hpp ] || missing+=(nlohmann-json3-dev)
[ -f /usr/include/png.h ] || missing+=(libpng-dev)
[ -f /usr/include/jpeglib.h ] || [ -f "/usr/include/$(gcc -dumpmachine 2>/dev/null)/jpeglib.h" ] || missing+=(libjpeg-dev)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    note "installing ${missing[*]} (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
      warn "apt-get install ${missing[*]} failed"
  else
    warn "missing ${missing[*]} and not root to install them"
  fi
fi

# The C API headers for the wheel's library, from Debian 13's libonnxruntime-dev (headers only).
HEADERS="$DEPS/onnxruntime-headers/usr/include/onnxruntime"
system_ort() {
  [ -n "${ONNXRUNTIME_ROOT:-}" ] || [ -f /usr/include/onnxruntime/onnxruntime_cxx_api.h ] ||
    [ -f /usr/local/include/onnxruntime/onnxruntime_cxx_api.h ] || [ -f /usr/local/include/onnxruntime_cxx_api.h ]
}
if ! system_ort && [ ! -f "$HEADERS/onnxruntime_cxx_api.h" ]; then
  APT="$DEPS/apt"
  mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/debs"
  cat >"$APT/trixie.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  opts=(-o "Dir::Etc::SourceList=$PWD/$APT/trixie.sources" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$PWD/$APT/lists" -o "Dir::Cache=$PWD/$APT/cache" -o Dir::State::status=/dev/null
        -o APT::Sandbox::User=root -o Debug::NoLocking=1)
  note "fetching libonnxruntime-dev from Debian trixie (headers only)"
  if apt-get "${opts[@]}" update -qq >/dev/null 2>"$APT/update.log" &&
     (cd "$APT/debs" && apt-get "${opts[@]}" download libonnxruntime-dev >/dev/null 2>"../download.log"); then
    deb="$(ls "$APT"/debs/libonnxruntime-dev_*.deb | sort -V | tail -1)"
    rm -rf "$DEPS/onnxruntime-headers"
    dpkg-deb -x "$deb" "$DEPS/onnxruntime-headers" && note "headers from $(basename "$deb") in $HEADERS"
  else
    warn "could not download libonnxruntime-dev (see $APT/update.log, $APT/download.log)"
  fi
fi

configure_and_build() {  # DIR, then cmake options; the last option names the target ("all" for everything)
  local dir="$1" target="${*: -1}"
  shift
  local args=("${@:1:$#-1}")
  if [ ! -f "$dir/CMakeCache.txt" ]; then
    cmake -S "$SRC" -B "$dir" -DPVLM_PYTHON="$PYTHON" "${args[@]}" >"$dir.configure.log" 2>&1 || {
      if grep -q "ONNX Runtime not found" "$dir.configure.log"; then
        warn "ONNX Runtime headers not found; the native runtime is not built (see $dir.configure.log)"
        rm -rf "$dir"; return 2
      fi
      cat "$dir.configure.log" >&2; rm -rf "$dir"; return 1; }
    grep "pvlm: ONNX Runtime from" "$dir.configure.log" | sed 's/^-- /native.sh: /' >&2
  fi
  cmake --build "$dir" -j "$JOBS" --target "$target" >"$dir.build.log" 2>&1 || { cat "$dir.build.log" >&2; return 1; }
  note "built $dir ($target)"
}

mkdir -p "$OUT"
configure_and_build "$OUT/release" -DCMAKE_BUILD_TYPE=Release all
rc=$?
[ "$rc" = 2 ] && exit 0
[ "$rc" = 0 ] || exit 1
if [ "${PVLM_NATIVE_ASAN:-1}" != 0 ]; then
  configure_and_build "$OUT/asan" -DCMAKE_BUILD_TYPE=Debug -DPVLM_SANITIZE=ON -DPVLM_BUILD_CLI=OFF pvlm-abi-test || exit 1
fi
