// SHA-256 (FIPS 180-4) of bytes and files: the bundle's artefact hashes, without a crypto library.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

namespace pvlm_core {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  void update(const std::string& s) { update(s.data(), s.size()); }
  std::string hex();  // finishes the digest: lowercase hex, 64 digits

 private:
  void block(const uint8_t* p);
  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buf_{};
  size_t used_ = 0;
  uint64_t total_ = 0;
};

// Hex sha256 of a file, or of every file under a folder (relative names included, sorted as Python's
// pathlib sorts them), as runtime.bundle.sha256_path computes it. Throws std::runtime_error when unreadable.
std::string sha256_path(const std::filesystem::path& path);

}  // namespace pvlm_core
