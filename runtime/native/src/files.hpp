// Reading bundle files: regular files only (a FIFO would block a reader, a device never ends), as
// runtime/bundle.py's open_regular / read_regular.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "pvlm.h"

namespace pvlm_core {

// A descriptor open for reading on a regular file; Error(code) naming the path otherwise (opened
// non-blocking and checked on the descriptor, so a FIFO can neither hang the open nor be swapped in).
int open_regular(const std::filesystem::path& path, pvlm_status code);

// The bytes of a regular file of at most max_bytes; Error(code) otherwise.
std::string read_regular(const std::filesystem::path& path, size_t max_bytes, pvlm_status code);

// "a FIFO", "a directory", ... for a stat mode that is not a regular file.
std::string file_kind(unsigned mode);

}  // namespace pvlm_core
