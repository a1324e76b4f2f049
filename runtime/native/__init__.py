"""The native runtime: a C++ library with a C ABI (``include/pvlm.h``) that describes crops from C and C++.

This package holds its sources (built with CMake, see docs/native.md), the ctypes bindings used by the
tests and by ``pvlm-bench``'s ``native-cpu`` row (:mod:`runtime.native.library`), and the build helper the
tests call (:mod:`runtime.native.compile`). Importing it loads nothing: the library is opened by
:class:`~runtime.native.library.NativeDescriber`.
"""
