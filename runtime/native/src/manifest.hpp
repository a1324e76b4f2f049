// manifest.json, validated as runtime/bundle.py validates it: strict JSON, the schema and its bounds
// (Manifest::parse), the agreement between sections and the graph contract (check_consistency), and the
// content hash that binds the manifest to its graphs (check_content_hash).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace pvlm_core {

using json = nlohmann::ordered_json;  // keys in file order, as Python's dict keeps them

inline constexpr const char* kBundleFormat = "pvlm-bundle";
inline constexpr int kSupportedVersions[] = {1};
inline constexpr const char* kContentHashAlgorithm = "sha256-jcs";
inline constexpr size_t kMaxManifestBytes = 16 * 1024 * 1024;
inline constexpr int kMaxJsonDepth = 32;

// One graph input or output: dtype and shape; a named (dynamic) dimension is -1 with its name kept.
struct TensorEntry {
  std::string dtype;
  std::vector<int64_t> dims;
  std::vector<std::string> dim_names;  // "" where the dimension is fixed
};

using Tensors = std::vector<std::pair<std::string, TensorEntry>>;  // manifest order

struct GraphEntry {
  std::string file;
  Tensors inputs, outputs;
  const TensorEntry* input(const std::string& name) const;
  const TensorEntry* output(const std::string& name) const;
};

struct Limits {
  int max_batch = 0, max_new_tokens = 0, max_positions = 0;
};

struct Preprocess {
  int height = 0, width = 0;
  std::array<float, 3> mean{}, std{};  // float32, as numpy applies them
};

struct ModelConfig {
  int n_layers = 0, n_heads = 0, d_model = 0, vocab_size = 0, max_len = 0;
  int head_dim() const { return d_model / n_heads; }
};

struct Manifest {
  json raw;
  std::vector<std::string> tokens;
  std::map<std::string, int64_t> special;
  Preprocess preprocess;
  ModelConfig model;
  std::map<std::string, GraphEntry> graphs;
  std::vector<std::string> graph_order;  // graph names in manifest order
  Limits limits;
  std::map<std::string, std::string> artifacts;                        // file -> sha256
  std::map<std::string, std::map<std::string, std::string>> variants;  // precision -> {graph: file}
  std::vector<std::string> files;  // every file name the manifest mentions (Manifest.files())

  // Validate the manifest's shape and bounds; Error(PVLM_ERR_MANIFEST, "invalid manifest: WHERE: WHAT").
  static Manifest parse(const json& data);
  // The sections agree with each other and with the graph contract; Error(PVLM_ERR_MANIFEST) otherwise.
  void check_consistency() const;
  // The recorded content_hash matches the contents; Error(PVLM_ERR_INTEGRITY) naming what changed.
  void check_content_hash() const;
};

// manifest.json's bytes as JSON: UTF-8, no NaN/Infinity, no duplicate keys, at most kMaxJsonDepth deep;
// std::invalid_argument with the reason otherwise.
json parse_manifest_json(const std::string& text);

}  // namespace pvlm_core
