# ONNX Runtime for the pvlm library, looked for in this order; the first that has both the C API
# headers and the shared library wins, and the configure log says which:
#   1. ONNXRUNTIME_ROOT, an install prefix the user names: the layout of ONNX Runtime's release archives
#      (include/onnxruntime_c_api.h, lib/libonnxruntime.so) or of Debian's packages
#      (include/onnxruntime/, lib/<multiarch>/). Given but unusable is an error, not a fallback.
#   2. the system: onnxruntime's CMake package (Debian's libonnxruntime-dev), else headers and library in
#      the default search paths;
#   3. the onnxruntime Python wheel's library (found by running PVLM_PYTHON, default python3) with the
#      headers in PVLM_ORT_HEADERS (default: build/deps/onnxruntime-headers, where .ci/native.sh
#      extracts Debian's libonnxruntime-dev). The C API is versioned, so older headers work with the
#      wheel's newer library.
# Defines the imported target pvlm::onnxruntime and PVLM_ORT_SOURCE (root, system or wheel),
# PVLM_ORT_LIBRARY and PVLM_ORT_INCLUDE_DIR.

set(ONNXRUNTIME_ROOT "" CACHE PATH "ONNX Runtime install prefix (release archive or Debian layout)")
set(PVLM_PYTHON "python3" CACHE STRING "Python whose onnxruntime wheel provides the library (the third choice)")
set(PVLM_ORT_HEADERS "${CMAKE_CURRENT_SOURCE_DIR}/build/deps/onnxruntime-headers/usr/include/onnxruntime"
    CACHE PATH "ONNX Runtime C API headers used with the Python wheel's library")

set(_pvlm_header_suffixes include include/onnxruntime include/onnxruntime/core/session)

function(_pvlm_ort_target library include_dir source)
  add_library(pvlm::onnxruntime SHARED IMPORTED GLOBAL)
  set_target_properties(pvlm::onnxruntime PROPERTIES IMPORTED_LOCATION "${library}"
                        INTERFACE_INCLUDE_DIRECTORIES "${include_dir}")
  set(PVLM_ORT_SOURCE "${source}" PARENT_SCOPE)
  set(PVLM_ORT_LIBRARY "${library}" PARENT_SCOPE)
  set(PVLM_ORT_INCLUDE_DIR "${include_dir}" PARENT_SCOPE)
endfunction()

# 1. a prefix the user names
if(ONNXRUNTIME_ROOT)
  find_path(_pvlm_root_include onnxruntime_cxx_api.h PATHS "${ONNXRUNTIME_ROOT}"
            PATH_SUFFIXES ${_pvlm_header_suffixes} NO_DEFAULT_PATH NO_CACHE)
  find_library(_pvlm_root_library NAMES onnxruntime PATHS "${ONNXRUNTIME_ROOT}"
               PATH_SUFFIXES lib lib64 "lib/${CMAKE_LIBRARY_ARCHITECTURE}" NO_DEFAULT_PATH NO_CACHE)
  if(NOT _pvlm_root_include OR NOT _pvlm_root_library)
    message(FATAL_ERROR "pvlm: ONNXRUNTIME_ROOT=${ONNXRUNTIME_ROOT} has no ONNX Runtime (looked for "
                        "onnxruntime_cxx_api.h under include/ and libonnxruntime under lib/)")
  endif()
  _pvlm_ort_target("${_pvlm_root_library}" "${_pvlm_root_include}" root)
endif()

# 2. the system
if(NOT PVLM_ORT_SOURCE)
  find_package(onnxruntime CONFIG QUIET)
  if(TARGET onnxruntime::onnxruntime)
    get_target_property(_pvlm_sys_include onnxruntime::onnxruntime INTERFACE_INCLUDE_DIRECTORIES)
    foreach(_config IMPORTED_LOCATION IMPORTED_LOCATION_RELWITHDEBINFO IMPORTED_LOCATION_RELEASE)
      get_target_property(_pvlm_sys_library onnxruntime::onnxruntime ${_config})
      if(_pvlm_sys_library)
        break()
      endif()
    endforeach()
    if(_pvlm_sys_library AND EXISTS "${_pvlm_sys_library}")
      _pvlm_ort_target("${_pvlm_sys_library}" "${_pvlm_sys_include}" system)
    endif()
  endif()
endif()
if(NOT PVLM_ORT_SOURCE)
  find_path(_pvlm_sys_include2 onnxruntime_cxx_api.h PATH_SUFFIXES onnxruntime onnxruntime/core/session NO_CACHE)
  find_library(_pvlm_sys_library2 NAMES onnxruntime NO_CACHE)
  if(_pvlm_sys_include2 AND _pvlm_sys_library2)
    _pvlm_ort_target("${_pvlm_sys_library2}" "${_pvlm_sys_include2}" system)
  endif()
endif()

# 3. the Python wheel's library with separately extracted headers
if(NOT PVLM_ORT_SOURCE)
  execute_process(
    COMMAND "${PVLM_PYTHON}" -c
            "import glob, os, onnxruntime as o; d = os.path.join(os.path.dirname(o.__file__), 'capi'); print(sorted(glob.glob(os.path.join(d, 'libonnxruntime.so.1.*')))[-1])"
    OUTPUT_VARIABLE _pvlm_wheel_library OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _pvlm_wheel_rc)
  if(_pvlm_wheel_rc EQUAL 0 AND EXISTS "${_pvlm_wheel_library}" AND EXISTS "${PVLM_ORT_HEADERS}/onnxruntime_cxx_api.h")
    # The wheel ships libonnxruntime.so.1.X.Y only; its SONAME is libonnxruntime.so.1, so the loader needs
    # a file of that name: a folder of links next to the build (installed with the library, see CMakeLists).
    set(_pvlm_links "${CMAKE_BINARY_DIR}/onnxruntime-wheel")
    file(MAKE_DIRECTORY "${_pvlm_links}")
    file(CREATE_LINK "${_pvlm_wheel_library}" "${_pvlm_links}/libonnxruntime.so.1" SYMBOLIC)
    file(CREATE_LINK "${_pvlm_wheel_library}" "${_pvlm_links}/libonnxruntime.so" SYMBOLIC)
    _pvlm_ort_target("${_pvlm_links}/libonnxruntime.so.1" "${PVLM_ORT_HEADERS}" wheel)
    set(PVLM_ORT_WHEEL_LIBRARY "${_pvlm_wheel_library}")
  endif()
endif()

if(NOT PVLM_ORT_SOURCE)
  message(FATAL_ERROR
    "pvlm: ONNX Runtime not found. Give an install prefix with -DONNXRUNTIME_ROOT=/path (a release archive "
    "from https://github.com/microsoft/onnxruntime/releases), install libonnxruntime-dev, or run "
    ".ci/native.sh, which extracts the headers for the onnxruntime Python wheel's library.")
endif()

set(_pvlm_c_api "${PVLM_ORT_INCLUDE_DIR}/onnxruntime_c_api.h")
file(STRINGS "${_pvlm_c_api}" _pvlm_api_line REGEX "^#define ORT_API_VERSION [0-9]+")
string(REGEX REPLACE "[^0-9]" "" PVLM_ORT_API_VERSION "${_pvlm_api_line}")
set(_pvlm_from_root "an install prefix (ONNXRUNTIME_ROOT=${ONNXRUNTIME_ROOT})")
set(_pvlm_from_system "the system")
set(_pvlm_from_wheel "the Python wheel (${PVLM_ORT_WHEEL_LIBRARY}) with the headers in ${PVLM_ORT_HEADERS}")
message(STATUS "pvlm: ONNX Runtime from ${_pvlm_from_${PVLM_ORT_SOURCE}}: library ${PVLM_ORT_LIBRARY}, "
               "headers ${PVLM_ORT_INCLUDE_DIR} (C API version ${PVLM_ORT_API_VERSION})")
