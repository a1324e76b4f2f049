// The C ABI (pvlm.h) over the engine: argument checks, results owned by the library, and the one place
// where exceptions become a status code and this thread's error message.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "engine.hpp"
#include "error.hpp"
#include "preprocess.hpp"
#include "pvlm.h"

#ifndef PVLM_VERSION_STRING
#define PVLM_VERSION_STRING "0.0.0"
#endif

using pvlm_core::Error;

struct pvlm_bundle {
  std::unique_ptr<pvlm_core::Engine> engine;
  int max_batch = 0, max_new_tokens = 0;
  int no_repeat_ngram_size = 0, min_crop_width = 0, min_crop_height = 0;
  std::string bundle_id, ort_version;
};

namespace {

thread_local std::string t_error;

// Run f; an exception becomes its status code and message (nothing crosses the ABI).
template <class F>
pvlm_status guarded(F&& f) noexcept {
  try {
    t_error.clear();
    f();
    return PVLM_OK;
  } catch (const Error& e) {
    try {
      t_error = e.what();
    } catch (...) {
    }
    return e.code();
  } catch (const std::bad_alloc&) {
    try {
      t_error = "out of memory";
    } catch (...) {
    }
    return PVLM_ERR_NO_MEMORY;
  } catch (const std::exception& e) {
    try {
      t_error = std::string("internal error: ") + e.what();
    } catch (...) {
    }
    return PVLM_ERR_INTERNAL;
  } catch (...) {
    try {
      t_error = "internal error: unknown exception";
    } catch (...) {
    }
    return PVLM_ERR_INTERNAL;
  }
}

// A pvlm_results and the storage its pointers refer to; freed as one.
struct ResultsHolder : pvlm_results {
  std::vector<pvlm_description> descriptions;
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> tokens;
};

void require(bool ok, const std::string& message) {
  if (!ok) throw Error(PVLM_ERR_ARGUMENT, message);
}

int tokens_for_call(const pvlm_bundle* b, int32_t max_new_tokens) {
  int limit = b->engine->bundle().manifest.limits.max_positions;
  if (max_new_tokens == 0) return b->max_new_tokens;
  if (max_new_tokens < 0 || max_new_tokens > limit)
    throw Error(PVLM_ERR_LIMIT, "max_new_tokens must be in [1, " + std::to_string(limit) + "], got " +
                                    std::to_string(max_new_tokens));
  return max_new_tokens;
}

void check_batch(const pvlm_bundle* b, size_t count) {
  require(count > 0, "count must be >= 1");
  if (count > size_t(b->max_batch))
    throw Error(PVLM_ERR_LIMIT, "batch " + std::to_string(count) + " exceeds max_batch " + std::to_string(b->max_batch) +
                                    " (split it into calls of at most max_batch images)");
}

pvlm_results* make_results(const pvlm_core::Engine& engine, pvlm_core::Generated&& g, double preprocess_ms,
                           std::chrono::steady_clock::time_point t0) {
  auto holder = std::make_unique<ResultsHolder>();
  size_t n = g.tokens.size();
  holder->tokens = std::move(g.tokens);
  holder->texts.reserve(n);
  holder->descriptions.resize(n);
  for (size_t i = 0; i < n; ++i) {
    holder->texts.push_back(engine.detokenize(holder->tokens[i]));
    auto& d = holder->descriptions[i];
    d.text = holder->texts[i].c_str();
    d.tokens = holder->tokens[i].data();
    d.n_tokens = holder->tokens[i].size();
    d.ended = g.ended[i];
  }
  holder->count = n;
  holder->items = holder->descriptions.data();
  holder->timings.preprocess_ms = preprocess_ms;
  holder->timings.encode_ms = g.encode_ms;
  holder->timings.decode_ms = g.decode_ms;
  holder->timings.steps = g.steps;
  holder->timings.batch = int32_t(n);
  holder->timings.total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return holder.release();
}

}  // namespace

extern "C" {

const char* pvlm_version(void) { return PVLM_VERSION_STRING; }

int32_t pvlm_abi_version(void) { return PVLM_ABI_VERSION; }

const char* pvlm_last_error(void) { return t_error.c_str(); }

const char* pvlm_status_name(pvlm_status status) {
  switch (status) {
    case PVLM_OK: return "PVLM_OK";
    case PVLM_ERR_ARGUMENT: return "PVLM_ERR_ARGUMENT";
    case PVLM_ERR_BUNDLE_MISSING: return "PVLM_ERR_BUNDLE_MISSING";
    case PVLM_ERR_MANIFEST: return "PVLM_ERR_MANIFEST";
    case PVLM_ERR_OUTSIDE_BUNDLE: return "PVLM_ERR_OUTSIDE_BUNDLE";
    case PVLM_ERR_INTEGRITY: return "PVLM_ERR_INTEGRITY";
    case PVLM_ERR_UNSUPPORTED: return "PVLM_ERR_UNSUPPORTED";
    case PVLM_ERR_LIMIT: return "PVLM_ERR_LIMIT";
    case PVLM_ERR_BOX: return "PVLM_ERR_BOX";
    case PVLM_ERR_RUNTIME: return "PVLM_ERR_RUNTIME";
    case PVLM_ERR_NO_MEMORY: return "PVLM_ERR_NO_MEMORY";
    case PVLM_ERR_INTERNAL: return "PVLM_ERR_INTERNAL";
  }
  return "PVLM_ERR_UNKNOWN";
}

void pvlm_options_init(pvlm_options* options) {
  if (options == nullptr) return;
  std::memset(options, 0, sizeof *options);
  options->struct_size = sizeof *options;
  options->precision = "fp32";
  options->decoder = "auto";
  options->verify = 1;
  options->no_repeat_ngram_size = 10;  // as runtime.decoding.DEFAULT_NO_REPEAT_NGRAM
  options->min_crop_width = -1;
  options->min_crop_height = -1;
}

pvlm_status pvlm_open(const char* bundle_dir, const pvlm_options* options, pvlm_bundle** out) {
  return guarded([&] {
    require(out != nullptr, "out is NULL");
    *out = nullptr;
    require(bundle_dir != nullptr, "bundle_dir is NULL");
    pvlm_options o;
    pvlm_options_init(&o);
    if (options != nullptr) {
      require(options->struct_size >= sizeof(uint32_t),
              "options->struct_size is " + std::to_string(options->struct_size) + ": fill options with pvlm_options_init");
      // A caller built against an older header passes a shorter struct: its fields, our defaults for the rest.
      std::memcpy(&o, options, std::min<size_t>(options->struct_size, sizeof o));
      o.struct_size = sizeof o;
    }
    pvlm_core::EngineOptions eo;
    eo.precision = o.precision ? o.precision : "fp32";
    eo.decoder = o.decoder ? o.decoder : "auto";
    eo.threads = o.threads;
    eo.verify = o.verify != 0;
    eo.shared_threads = o.shared_threads != 0;
    if (o.encoder_chunk_pixels < 0)
      throw Error(PVLM_ERR_ARGUMENT, "encoder_chunk_pixels must be >= 0, got " + std::to_string(o.encoder_chunk_pixels));
    if (o.encoder_chunk_pixels > 0) eo.encoder_chunk_pixels = o.encoder_chunk_pixels;
    auto b = std::make_unique<pvlm_bundle>();
    b->engine = std::make_unique<pvlm_core::Engine>(bundle_dir, eo);
    const auto& limits = b->engine->bundle().manifest.limits;
    b->max_batch = o.max_batch == 0 ? limits.max_batch : o.max_batch;
    if (b->max_batch < 1 || b->max_batch > limits.max_batch)
      throw Error(PVLM_ERR_LIMIT, "max_batch must be in [1, " + std::to_string(limits.max_batch) +
                                      "] (the bundle's limit), got " + std::to_string(o.max_batch));
    b->max_new_tokens = o.max_new_tokens == 0 ? limits.max_new_tokens : o.max_new_tokens;
    if (b->max_new_tokens < 1 || b->max_new_tokens > limits.max_positions)
      throw Error(PVLM_ERR_LIMIT, "max_new_tokens must be in [1, " + std::to_string(limits.max_positions) + "], got " +
                                      std::to_string(o.max_new_tokens));
    if (o.no_repeat_ngram_size < 0)
      throw Error(PVLM_ERR_ARGUMENT, "no_repeat_ngram_size must be >= 0, got " + std::to_string(o.no_repeat_ngram_size));
    b->no_repeat_ngram_size = o.no_repeat_ngram_size;
    auto min_crop = [](int32_t given, int input, const char* name) {  // -1: 1/8 of the input (Describer's)
      if (given < -1)
        throw Error(PVLM_ERR_ARGUMENT, std::string("min_crop_") + name + " must be >= -1, got " + std::to_string(given));
      return given == -1 ? std::max(1, input / 8) : int(given);
    };
    const auto& pre = b->engine->bundle().manifest.preprocess;
    b->min_crop_width = min_crop(o.min_crop_width, pre.width, "width");
    b->min_crop_height = min_crop(o.min_crop_height, pre.height, "height");
    b->bundle_id = b->engine->bundle().manifest_sha256.substr(0, 16);
    b->ort_version = pvlm_core::Engine::onnxruntime_version();
    *out = b.release();
  });
}

void pvlm_close(pvlm_bundle* bundle) { delete bundle; }

pvlm_status pvlm_info_get(const pvlm_bundle* bundle, pvlm_info* out) {
  return guarded([&] {
    require(bundle != nullptr, "bundle is NULL");
    require(out != nullptr, "out is NULL");
    const auto& e = *bundle->engine;
    const auto& m = e.bundle().manifest;
    out->input_height = m.preprocess.height;
    out->input_width = m.preprocess.width;
    out->max_batch = bundle->max_batch;
    out->max_new_tokens = bundle->max_new_tokens;
    out->max_positions = m.limits.max_positions;
    out->vocab_size = e.vocab_size();
    out->precision = e.precision().c_str();
    out->decoder = e.decoder_graph().c_str();
    out->bundle_id = bundle->bundle_id.c_str();
    out->onnxruntime_version = bundle->ort_version.c_str();
    out->shared_threads = e.shared_threads() ? 1 : 0;
    out->no_repeat_ngram_size = bundle->no_repeat_ngram_size;
    out->min_crop_width = bundle->min_crop_width;
    out->min_crop_height = bundle->min_crop_height;
  });
}

pvlm_status pvlm_describe(pvlm_bundle* bundle, const pvlm_image* images, size_t count, int32_t max_new_tokens,
                          pvlm_results** out) {
  return guarded([&] {
    require(out != nullptr, "out is NULL");
    *out = nullptr;
    require(bundle != nullptr, "bundle is NULL");
    require(images != nullptr, "images is NULL");
    check_batch(bundle, count);
    int n_tokens = tokens_for_call(bundle, max_new_tokens);
    auto t0 = std::chrono::steady_clock::now();
    std::vector<pvlm_core::Rect> regions;
    for (size_t i = 0; i < count; ++i) {
      regions.push_back(pvlm_core::check_image(&images[i], i));
      pvlm_core::check_min_crop(images[i], regions[i], i, bundle->min_crop_width, bundle->min_crop_height);
    }
    const auto& pre = bundle->engine->bundle().manifest.preprocess;
    const size_t per_image = size_t(3) * pre.height * pre.width;
    std::vector<float> pixels(per_image * count);
    for (size_t i = 0; i < count; ++i) pvlm_core::preprocess(images[i], regions[i], pre, pixels.data() + i * per_image);
    double preprocess_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    auto g = bundle->engine->generate(pixels.data(), int(count), n_tokens, true, bundle->no_repeat_ngram_size);
    *out = make_results(*bundle->engine, std::move(g), preprocess_ms, t0);
  });
}

pvlm_status pvlm_generate(pvlm_bundle* bundle, const float* pixels, size_t count, int32_t max_new_tokens,
                          int32_t stop_at_eos, int32_t no_repeat_ngram_size, pvlm_results** out) {
  return guarded([&] {
    require(out != nullptr, "out is NULL");
    *out = nullptr;
    require(bundle != nullptr, "bundle is NULL");
    require(pixels != nullptr, "pixels is NULL");
    check_batch(bundle, count);
    require(no_repeat_ngram_size >= 0, "no_repeat_ngram_size must be >= 0, got " + std::to_string(no_repeat_ngram_size));
    int n_tokens = tokens_for_call(bundle, max_new_tokens);
    auto t0 = std::chrono::steady_clock::now();
    auto g = bundle->engine->generate(pixels, int(count), n_tokens, stop_at_eos != 0, no_repeat_ngram_size);
    *out = make_results(*bundle->engine, std::move(g), 0.0, t0);
  });
}

pvlm_status pvlm_preprocess(const pvlm_bundle* bundle, const pvlm_image* image, float* out, size_t out_len) {
  return guarded([&] {
    require(bundle != nullptr, "bundle is NULL");
    require(out != nullptr, "out is NULL");
    const auto& pre = bundle->engine->bundle().manifest.preprocess;
    size_t need = size_t(3) * pre.height * pre.width;
    require(out_len >= need, "out_len " + std::to_string(out_len) + " is less than 3 x " + std::to_string(pre.height) +
                                 " x " + std::to_string(pre.width) + " = " + std::to_string(need) + " floats");
    pvlm_core::Rect region = pvlm_core::check_image(image, 0);
    pvlm_core::preprocess(*image, region, pre, out);
  });
}

void pvlm_results_free(pvlm_results* results) { delete static_cast<ResultsHolder*>(results); }

}  // extern "C"
