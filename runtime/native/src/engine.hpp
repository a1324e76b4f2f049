// The greedy loop over ONNX Runtime sessions, as runtime/describer.py + backends/ort*.py run it:
// encoder once per batch, then one decoder step per token, finished rows leaving the batch. With the
// bundle's cross_ort + decoder_ort graphs the KV cache is bound once per batch (IO binding) and the step
// appends to it in place; otherwise the portable decoder.onnx runs with a host cache.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "bundle.hpp"

namespace pvlm_core {

struct EngineOptions {
  std::string precision = "fp32";
  std::string decoder = "auto";  // auto, ort, portable
  int threads = 0;
  bool verify = true;
  bool shared_threads = false;
  // The encoder runs a batch in equal chunks of at most this many input pixels (at least one image each), so
  // that ONNX Runtime's arena keeps one chunk's activations rather than the whole batch's. 2 x 224 x 224 by
  // default: on the quickstart lite0 bundle, 32 crops peak at 110 MB instead of 172 MB with the Python runtime's
  // 8 x 224 x 224 (runtime/backends/ort.py ENCODER_CHUNK_PIXELS), at the same batch-32 speed (docs/native.md).
  int64_t encoder_chunk_pixels = kDefaultEncoderChunkPixels;
  static constexpr int64_t kDefaultEncoderChunkPixels = int64_t(2) * 224 * 224;
};

// What one greedy run produced: per row the ids (without BOS/EOS when stopping at EOS), whether it
// stopped before the limit (EOS or the repetition guard), and where the time went.
struct Generated {
  std::vector<std::vector<int32_t>> tokens;
  std::vector<int32_t> ended;
  double encode_ms = 0, decode_ms = 0;
  int steps = 0;
};

class Engine {
 public:
  // Load and check the bundle, choose the decoder graph, create the sessions. Throws Error.
  Engine(const std::filesystem::path& bundle_dir, const EngineOptions& options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Greedy ids for float32 pixels (batch, 3, H, W); batch >= 1, 1 <= max_new_tokens <= max_positions
  // (checked by the caller). Thread-safe: the state of a run is its own.
  // no_repeat_ngram_size > 0: a row whose next id would repeat an n-gram of its ids ends there
  // (runtime.describer.greedy_decode's guard).
  Generated generate(const float* pixels, int batch, int max_new_tokens, bool stop_at_eos,
                     int no_repeat_ngram_size) const;

  // Token ids -> text, as runtime.describer.detokenize (ids below 4 skipped, punctuation re-attached).
  std::string detokenize(const std::vector<int32_t>& ids) const;

  const Bundle& bundle() const { return bundle_; }
  const std::string& precision() const { return options_.precision; }
  const std::string& decoder_graph() const { return decoder_graph_; }
  bool shared_threads() const { return shared_threads_; }
  int vocab_size() const { return int(bundle_.manifest.tokens.size()); }
  static std::string onnxruntime_version();

  struct Sessions;  // ONNX Runtime objects, private to engine.cpp

 private:
  Bundle bundle_;
  EngineOptions options_;
  std::string decoder_graph_;
  bool shared_threads_ = false;
  int64_t bos_ = 1, eos_ = 2;
  std::unique_ptr<Sessions> sessions_;
};

}  // namespace pvlm_core
