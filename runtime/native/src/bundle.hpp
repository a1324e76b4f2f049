// An export bundle on disk, read and checked as runtime/bundle.py's Bundle.load does: the manifest
// (manifest.hpp), every file it names inside the bundle and a regular file or folder, and with verify
// the content hash, each artefact's sha256 and each ONNX graph's inputs and outputs.
//
// Bundle::load runs its checks in order (kLoadChecks and kVerifyChecks in bundle.cpp): each is one
// function over the parsed manifest and the directory, so a check the Python reader gains is one more
// entry there.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "manifest.hpp"

namespace pvlm_core {

struct Bundle {
  std::filesystem::path root;
  Manifest manifest;
  std::string manifest_sha256;  // of manifest.json's bytes

  // Read and validate the manifest, check every named file stays inside root and (verify) the rest.
  static Bundle load(const std::filesystem::path& root, bool verify);

  // "fp32" then the variants' precisions.
  std::vector<std::string> precisions() const;
  // Graph name -> file of the graphs a variant replaces ({} for fp32); Error(PVLM_ERR_UNSUPPORTED) if absent.
  std::map<std::string, std::string> variant_graphs(const std::string& precision) const;
  const GraphEntry& graph(const std::string& name) const;
  bool has_graph(const std::string& name) const { return manifest.graphs.count(name) > 0; }
  // Path of a graph's file in precision (the FP32 file where the variant does not replace it).
  std::filesystem::path path(const std::string& name, const std::string& precision) const;
};

// root / name, refused (Error PVLM_ERR_OUTSIDE_BUNDLE) unless it resolves, symlinks included, inside root.
std::filesystem::path inside(const std::filesystem::path& root, const std::string& name);

}  // namespace pvlm_core
