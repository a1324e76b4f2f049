// pvlm.hpp: a header-only C++17 wrapper over pvlm.h. RAII owners for the bundle and the results,
// failures as pvlm::Error (status + message). Compiled into the caller: exceptions never cross the C ABI.
#ifndef PVLM_HPP_
#define PVLM_HPP_

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "pvlm.h"

namespace pvlm {

// A failed pvlm_* call: its status and message.
class Error : public std::runtime_error {
 public:
  Error(pvlm_status status, const std::string& message)
      : std::runtime_error(std::string(pvlm_status_name(status)) + ": " + message), status_(status) {}
  pvlm_status status() const noexcept { return status_; }

 private:
  pvlm_status status_;
};

inline void check(pvlm_status status) {
  if (status != PVLM_OK) throw Error(status, pvlm_last_error());
}

// Options of Bundle; defaults as pvlm_options_init.
struct Options {
  std::string precision = "fp32";
  std::string decoder = "auto";
  int threads = 0;
  int max_batch = 0;
  int max_new_tokens = 0;
  bool verify = true;
  bool shared_threads = false;
  int no_repeat_ngram_size = 10;  // describe()'s repetition guard (0: off; 10: runtime.decoding's default)
  int min_crop_width = -1;        // -1: 1/8 of the model's input; 0: no minimum
  int min_crop_height = -1;
  int64_t encoder_chunk_pixels = 0;  // input pixels per encoder call (0: the library's default, 2 x 224 x 224)
};

// One image's description (a copy: it outlives the call's results).
struct Description {
  std::string text;
  std::vector<int32_t> tokens;
  bool ended = false;
};

// A call's descriptions, in input order, and its timings.
struct Result {
  std::vector<Description> descriptions;
  pvlm_timings timings{};
};

// A uint8 HWC frame, and optionally the box to describe in it (the box is copied).
class Image {
 public:
  Image(const uint8_t* data, int width, int height, pvlm_pixel_format format, int stride = 0) {
    raw_.data = data;
    raw_.width = width;
    raw_.height = height;
    raw_.stride = stride;
    raw_.format = format;
    raw_.box = nullptr;
  }
  // The same frame, cropped to x1, y1, x2, y2 (pixels; clipped to the frame).
  Image crop(float x1, float y1, float x2, float y2) const {
    Image out = *this;
    out.box_ = std::make_shared<pvlm_box>(pvlm_box{x1, y1, x2, y2});
    return out;
  }
  pvlm_image raw() const {
    pvlm_image r = raw_;
    r.box = box_.get();
    return r;
  }

 private:
  pvlm_image raw_{};
  std::shared_ptr<pvlm_box> box_;
};

// An opened bundle; share one between threads. Move-only; closes on destruction.
class Bundle {
 public:
  explicit Bundle(const std::string& dir, const Options& options = {}) {
    pvlm_options o;
    pvlm_options_init(&o);
    o.precision = options.precision.c_str();
    o.decoder = options.decoder.c_str();
    o.threads = options.threads;
    o.max_batch = options.max_batch;
    o.max_new_tokens = options.max_new_tokens;
    o.verify = options.verify ? 1 : 0;
    o.shared_threads = options.shared_threads ? 1 : 0;
    o.no_repeat_ngram_size = options.no_repeat_ngram_size;
    o.min_crop_width = options.min_crop_width;
    o.min_crop_height = options.min_crop_height;
    o.encoder_chunk_pixels = options.encoder_chunk_pixels;
    pvlm_bundle* b = nullptr;
    check(pvlm_open(dir.c_str(), &o, &b));
    handle_.reset(b);
  }

  pvlm_info info() const {
    pvlm_info i{};
    check(pvlm_info_get(handle_.get(), &i));
    return i;
  }

  // Describe up to info().max_batch images in one batch; max_new_tokens 0: the bundle's default.
  Result describe(const std::vector<Image>& images, int max_new_tokens = 0) const {
    std::vector<pvlm_image> raw;
    raw.reserve(images.size());
    for (const auto& im : images) raw.push_back(im.raw());
    pvlm_results* r = nullptr;
    check(pvlm_describe(handle_.get(), raw.data(), raw.size(), max_new_tokens, &r));
    return take(r);
  }

  // The greedy loop on preprocessed float32 (count, 3, H, W) pixels (no repetition guard unless asked).
  Result generate(const float* pixels, size_t count, int max_new_tokens = 0, bool stop_at_eos = true,
                  int no_repeat_ngram_size = 0) const {
    pvlm_results* r = nullptr;
    check(pvlm_generate(handle_.get(), pixels, count, max_new_tokens, stop_at_eos ? 1 : 0, no_repeat_ngram_size, &r));
    return take(r);
  }

  // One image's encoder input, float32 (3, H, W).
  std::vector<float> preprocess(const Image& image) const {
    pvlm_info i = info();
    std::vector<float> out(size_t(3) * i.input_height * i.input_width);
    pvlm_image raw = image.raw();
    check(pvlm_preprocess(handle_.get(), &raw, out.data(), out.size()));
    return out;
  }

  pvlm_bundle* get() const noexcept { return handle_.get(); }

 private:
  struct Close {
    void operator()(pvlm_bundle* b) const noexcept { pvlm_close(b); }
  };
  struct Free {
    void operator()(pvlm_results* r) const noexcept { pvlm_results_free(r); }
  };

  static Result take(pvlm_results* raw) {
    std::unique_ptr<pvlm_results, Free> owned(raw);
    Result out;
    out.timings = owned->timings;
    out.descriptions.reserve(owned->count);
    for (size_t i = 0; i < owned->count; ++i) {
      const pvlm_description& d = owned->items[i];
      out.descriptions.push_back({d.text, std::vector<int32_t>(d.tokens, d.tokens + d.n_tokens), d.ended != 0});
    }
    return out;
  }

  std::unique_ptr<pvlm_bundle, Close> handle_;
};

}  // namespace pvlm

#endif  // PVLM_HPP_
