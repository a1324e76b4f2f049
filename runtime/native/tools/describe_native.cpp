// pvlm-describe-native BUNDLE IMAGE...: one JSON line per image, as `pvlm-describe --json --tokens` prints
// them (schema_version, bundle_id, backend, image, text, timings, error, tokens; plus path, the same as
// image), without attributes: parsing text into attributes stays in Python (runtime.attributes).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "image_io.hpp"
#include "pvlm.hpp"

namespace {

using json = nlohmann::ordered_json;

constexpr const char* kUsage =
    "usage: pvlm-describe-native [options] BUNDLE IMAGE...\n"
    "\n"
    "Describe each IMAGE (a PNG or JPEG file; - reads paths from stdin, one per line) with the exported\n"
    "BUNDLE. Prints one JSON line per image on stdout; errors as 'error: ...' lines on stderr.\n"
    "\n"
    "options:\n"
    "  --precision P       fp32 (default), or a variant the bundle holds (int8, fp16)\n"
    "  --decoder D         auto (default), ort (cross_ort + decoder_ort), portable (decoder.onnx)\n"
    "  --threads N         intra-op threads per graph (default: ONNX Runtime's)\n"
    "  --batch-size N      images per batch (default: the bundle's max batch)\n"
    "  --max-new-tokens N  tokens per description (default: the bundle's limit)\n"
    "  --max-pixels N      refuse images with more pixels (default 64000000)\n"
    "  --no-repeat-ngram-size N  end a row instead of repeating an N-gram (default 10, as pvlm-describe; 0: off)\n"
    "  --no-verify         skip the artefacts' sha256 check\n"
    "  --shared-threads    ONNX Runtime's process-wide thread pool for every graph\n"
    "  --encoder-chunk-pixels N  input pixels per encoder call (default 100352 = 2 x 224 x 224; peak memory\n"
    "                      follows one chunk's activations)\n"
    "  --dump-inputs DIR   also write each image's encoder input to DIR/N.f32 (float32 3 x H x W, N: its index)\n"
    "  -h, --help          this text\n"
    "  --version           the library's version\n"
    "\n"
    "Exit status: 0 every image described; 1 some images failed; 2 bad usage, an unusable bundle, or no\n"
    "image could be described.\n";

double round1(double v) { return std::round(v * 10.0) / 10.0; }

// runtime.preprocess.quote_path for error messages: as it is, or in double quotes with C-style escapes when it
// holds a control character or starts with '"' (here for ASCII control characters).
std::string quote_path(const std::string& path) {
  bool plain = !path.empty() && path[0] != '"';
  for (unsigned char c : path) plain = plain && c >= 0x20 && c != 0x7F;
  if (plain || path.empty()) return path;
  std::string out = "\"";
  for (unsigned char c : path) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\t': out += "\\t"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20 || c == 0x7F) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02x", c);
          out += buf;
        } else {
          out += char(c);
        }
    }
  }
  return out + "\"";
}

int usage_error(const std::string& message) {
  std::cerr << "error: " << message << "\n(pvlm-describe-native --help for usage)\n";
  return 2;
}

bool parse_int(const char* s, long long lo, long long* out) {
  char* end = nullptr;
  long long v = std::strtoll(s, &end, 10);
  if (end == s || *end != '\0' || v < lo) return false;
  *out = v;
  return true;
}

// One image's outcome: its description and its call's timings, or the error that names it.
struct Outcome {
  bool ok = false;
  pvlm::Description description;
  pvlm_timings timings{};
  std::string error;  // the library's message (pvlm_last_error) when !ok
};

// Describe images in one call. The library checks every input before any work and refuses the whole call for
// the first bad one, so a refused batch is described again image by image: a bad input fails only itself and
// the others go on (as pvlm-describe skips a bad input; a batch of one then says which input failed).
std::vector<Outcome> describe_batch(const pvlm::Bundle& bundle, const std::vector<pvlm::Image>& images) {
  std::vector<Outcome> out(images.size());
  try {
    pvlm::Result r = bundle.describe(images);
    for (size_t k = 0; k < images.size(); ++k) out[k] = {true, r.descriptions[k], r.timings, ""};
    return out;
  } catch (const pvlm::Error&) {
    if (images.size() == 1) {
      out[0].error = pvlm_last_error();
      return out;
    }
  }
  for (size_t k = 0; k < images.size(); ++k) out[k] = describe_batch(bundle, {images[k]})[0];
  return out;
}

// --dump-inputs: the image's encoder input as DIR/INDEX.f32; the reason it could not be written, or "".
std::string dump_input(const pvlm::Bundle& bundle, const pvlm::Image& image, const std::string& dir, size_t index) {
  const std::string path = dir + "/" + std::to_string(index) + ".f32";
  try {
    std::vector<float> input = bundle.preprocess(image);
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(input.data()), std::streamsize(input.size() * sizeof(float)));
    return f ? "" : "cannot write " + path + " (--dump-inputs)";
  } catch (const pvlm::Error&) {
    return pvlm_last_error();
  }
}

json line_for(const std::string& bundle_id, const std::string& path, const Outcome* o, double decode_ms,
              const std::string& error) {
  json line;
  line["schema_version"] = 1;
  line["bundle_id"] = bundle_id;
  line["backend"] = "native-cpu";
  line["image"] = path;
  line["path"] = path;
  if (error.empty()) {
    const pvlm_timings& t = o->timings;
    line["text"] = o->description.text;
    // as runtime.Describer: preprocess_ms covers decoding the files too, total_ms the whole batch
    line["timings"] = {{"preprocess_ms", round1(decode_ms + t.preprocess_ms)},
                       {"encode_ms", round1(t.encode_ms)},
                       {"decode_ms", round1(t.decode_ms)},
                       {"steps", t.steps},
                       {"total_ms", round1(decode_ms + t.total_ms)},
                       {"batch", t.batch}};
    line["error"] = nullptr;
    line["tokens"] = o->description.tokens;
  } else {
    line["text"] = "";
    line["timings"] = json::object();
    line["error"] = error;
    line["tokens"] = json::array();
  }
  return line;
}

}  // namespace

int main(int argc, char** argv) {
  pvlm::Options options;
  long long batch_size = 0, max_new_tokens = 0, max_pixels = 64000000, no_repeat = 10;
  std::string dump_dir;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* name) -> const char* {
      if (i + 1 >= argc) return nullptr;
      (void)name;
      return argv[++i];
    };
    long long n = 0;
    if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      return 0;
    } else if (a == "--version") {
      std::cout << "pvlm-describe-native " << pvlm_version() << "\n";
      return 0;
    } else if (a == "--precision" || a == "--decoder") {
      const char* v = value(a.c_str());
      if (!v) return usage_error(a + " needs a value");
      (a == "--precision" ? options.precision : options.decoder) = v;
    } else if (a == "--threads" || a == "--batch-size" || a == "--max-new-tokens" || a == "--max-pixels" ||
               a == "--encoder-chunk-pixels") {
      const char* v = value(a.c_str());
      if (!v || !parse_int(v, 1, &n)) return usage_error(a + " needs an integer >= 1");
      if (a == "--threads") options.threads = int(n);
      if (a == "--encoder-chunk-pixels") options.encoder_chunk_pixels = n;
      if (a == "--batch-size") batch_size = n;
      if (a == "--max-new-tokens") max_new_tokens = n;
      if (a == "--max-pixels") max_pixels = n;
    } else if (a == "--no-repeat-ngram-size") {
      const char* v = value(a.c_str());
      if (!v || !parse_int(v, 0, &no_repeat)) return usage_error(a + " needs an integer >= 0");
    } else if (a == "--dump-inputs") {
      const char* v = value(a.c_str());
      if (!v) return usage_error(a + " needs a folder");
      dump_dir = v;
    } else if (a == "--no-verify") {
      options.verify = false;
    } else if (a == "--shared-threads") {
      options.shared_threads = true;
    } else if (a.size() > 1 && a[0] == '-' && a != "-") {
      return usage_error("unknown option " + a);
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() < 2) return usage_error("give a BUNDLE and at least one IMAGE");
  std::vector<std::string> paths;
  for (size_t i = 1; i < positional.size(); ++i) {
    if (positional[i] == "-") {
      std::string line;  // only the line ending is removed: spaces stay part of the name, as pvlm-describe reads it
      while (std::getline(std::cin, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (!line.empty()) paths.push_back(line);
      }
    } else {
      paths.push_back(positional[i]);
    }
  }
  if (paths.empty()) return usage_error("no images to describe");

  options.max_batch = int(batch_size);
  options.max_new_tokens = int(max_new_tokens);
  options.no_repeat_ngram_size = int(no_repeat);
  std::unique_ptr<pvlm::Bundle> bundle;
  try {
    bundle = std::make_unique<pvlm::Bundle>(positional[0], options);
  } catch (const pvlm::Error& e) {
    std::cerr << "error: " << pvlm_last_error() << "\n";
    return 2;
  }
  const pvlm_info info = bundle->info();
  const std::string bundle_id = info.bundle_id;
  size_t failed = 0;
  for (size_t start = 0; start < paths.size(); start += size_t(info.max_batch)) {
    size_t end = std::min(paths.size(), start + size_t(info.max_batch));
    auto t0 = std::chrono::steady_clock::now();
    std::vector<pvlm_cli::RgbImage> decoded(end - start);
    std::vector<std::string> errors(end - start);
    std::vector<pvlm::Image> images;
    std::vector<size_t> good;
    for (size_t i = start; i < end; ++i) {
      try {
        decoded[i - start] = pvlm_cli::read_image(paths[i], max_pixels);
        const auto& im = decoded[i - start];
        images.emplace_back(im.pixels.data(), im.width, im.height, PVLM_PIXEL_RGB);
        good.push_back(i);
      } catch (const std::exception& e) {
        errors[i - start] = "input " + std::to_string(i) + " (" + quote_path(paths[i]) + "): " + e.what();
      }
    }
    double decode_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    auto name = [&](size_t i) { return "input " + std::to_string(i) + " (" + quote_path(paths[i]) + "): "; };
    std::vector<pvlm::Image> kept;  // what dumping left describable, in the same order as `described`
    std::vector<size_t> described;
    for (size_t k = 0; k < good.size(); ++k) {
      std::string why = dump_dir.empty() ? "" : dump_input(*bundle, images[k], dump_dir, good[k]);
      if (why.empty()) {
        kept.push_back(images[k]);
        described.push_back(good[k]);
      } else {
        errors[good[k] - start] = name(good[k]) + why;
      }
    }
    std::vector<Outcome> outcomes = kept.empty() ? std::vector<Outcome>{} : describe_batch(*bundle, kept);
    for (size_t k = 0; k < described.size(); ++k)
      if (!outcomes[k].ok) errors[described[k] - start] = name(described[k]) + outcomes[k].error;
    size_t k = 0;
    for (size_t i = start; i < end; ++i) {
      const Outcome* o = k < described.size() && described[k] == i ? &outcomes[k++] : nullptr;
      const std::string& error = errors[i - start];
      if (!error.empty()) {
        ++failed;
        std::cerr << "error: " << error << "\n";
      }
      std::cout << line_for(bundle_id, paths[i], o, decode_ms, error).dump(-1, ' ', true, json::error_handler_t::replace)
                << "\n";
    }
    std::cout.flush();
  }
  if (failed) return failed == paths.size() ? 2 : 1;
  return 0;
}
