// pvlm-abi-test BUNDLE SCRATCH: the C-ABI cases of tests/test_native_abi.py as one program, so that a build
// with -fsanitize=address,undefined runs them without preloading the sanitizer runtime into Python.
// Prints "ok - NAME" or "FAIL - NAME: ..." per check; exit status 1 when any check failed.
#include <cmath>
#include <cstdio>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "pvlm.h"
#include "pvlm.hpp"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

int failures = 0;

void check(bool ok, const std::string& name, const std::string& detail = "") {
  std::printf("%s - %s%s%s\n", ok ? "ok" : "FAIL", name.c_str(), ok || detail.empty() ? "" : ": ", ok ? "" : detail.c_str());
  if (!ok) ++failures;
}

// The call returned `want`, with a message mentioning `needle` (and no handle where one was asked for).
void expect(pvlm_status got, pvlm_status want, const std::string& needle, const std::string& name) {
  std::string msg = pvlm_last_error();
  bool ok = got == want && !msg.empty() && msg.find(needle) != std::string::npos;
  check(ok, name, std::string("got ") + pvlm_status_name(got) + " '" + msg + "', wanted " + pvlm_status_name(want) +
                      " mentioning '" + needle + "'");
}

fs::path copy_bundle(const fs::path& bundle, const fs::path& scratch, const std::string& name) {
  fs::path out = scratch / name;
  fs::remove_all(out);
  fs::copy(bundle, out, fs::copy_options::recursive);
  return out;
}

json read_json(const fs::path& p) {
  std::ifstream f(p);
  return json::parse(f);
}

void write_json(const fs::path& p, const json& j) {
  std::ofstream f(p);
  f << j.dump(2);
}

std::vector<uint8_t> frame(int w, int h, int channels, unsigned seed) {
  std::vector<uint8_t> px(size_t(w) * h * channels);
  for (size_t i = 0; i < px.size(); ++i) px[i] = uint8_t((i * 2654435761u + seed * 40503u) >> 13);
  return px;
}

pvlm_image image_of(const std::vector<uint8_t>& px, int w, int h, int format, const pvlm_box* box = nullptr) {
  pvlm_image im{};
  im.data = px.data();
  im.width = w;
  im.height = h;
  im.stride = 0;
  im.format = format;
  im.box = box;
  return im;
}

std::vector<std::vector<int32_t>> tokens_of(const pvlm_results* r) {
  std::vector<std::vector<int32_t>> out;
  for (size_t i = 0; i < r->count; ++i) out.emplace_back(r->items[i].tokens, r->items[i].tokens + r->items[i].n_tokens);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: pvlm-abi-test BUNDLE SCRATCH_DIR\n");
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // every line out before a sanitizer stops the program
  const fs::path bundle = argv[1], scratch = argv[2];
  fs::create_directories(scratch);
  pvlm_bundle* b = nullptr;

  // ---- opening: every refusal is a status and a message, and no handle
  b = reinterpret_cast<pvlm_bundle*>(&failures);
  expect(pvlm_open((scratch / "no-such-bundle").c_str(), nullptr, &b), PVLM_ERR_BUNDLE_MISSING, "does not exist",
         "missing bundle");
  check(b == nullptr, "missing bundle leaves *out NULL");
  expect(pvlm_open(nullptr, nullptr, &b), PVLM_ERR_ARGUMENT, "bundle_dir", "NULL bundle_dir");
  expect(pvlm_open(bundle.c_str(), nullptr, nullptr), PVLM_ERR_ARGUMENT, "out", "NULL out");
  {
    fs::path t = copy_bundle(bundle, scratch, "tampered");
    std::ofstream(t / "encoder.onnx", std::ios::app | std::ios::binary) << '\0';
    expect(pvlm_open(t.c_str(), nullptr, &b), PVLM_ERR_INTEGRITY, "sha256 does not match", "tampered graph (sha256)");
  }
  {
    fs::path t = copy_bundle(bundle, scratch, "outside");
    json m = read_json(t / "manifest.json");
    m["graphs"]["encoder"]["file"] = "../encoder.onnx";
    write_json(t / "manifest.json", m);
    expect(pvlm_open(t.c_str(), nullptr, &b), PVLM_ERR_MANIFEST, "points outside the bundle", "manifest path outside");
  }
  {
    fs::path t = copy_bundle(bundle, scratch, "symlink");
    fs::copy_file(t / "encoder.onnx", scratch / "elsewhere.onnx", fs::copy_options::overwrite_existing);
    fs::remove(t / "encoder.onnx");
    fs::create_symlink(scratch / "elsewhere.onnx", t / "encoder.onnx");
    expect(pvlm_open(t.c_str(), nullptr, &b), PVLM_ERR_OUTSIDE_BUNDLE, "resolves outside", "symlink out of the bundle");
  }
  {
    fs::path t = copy_bundle(bundle, scratch, "version");
    json m = read_json(t / "manifest.json");
    m["version"] = 99;
    write_json(t / "manifest.json", m);
    expect(pvlm_open(t.c_str(), nullptr, &b), PVLM_ERR_MANIFEST, "version 99 is not supported", "unknown version");
    std::ofstream(t / "manifest.json") << "{not json";
    expect(pvlm_open(t.c_str(), nullptr, &b), PVLM_ERR_MANIFEST, "corrupt manifest", "corrupt manifest");
  }
  pvlm_options o;
  pvlm_options_init(&o);
  o.struct_size = 0;
  expect(pvlm_open(bundle.c_str(), &o, &b), PVLM_ERR_ARGUMENT, "struct_size", "options without pvlm_options_init");
  pvlm_options_init(&o);
  o.precision = "int3";
  expect(pvlm_open(bundle.c_str(), &o, &b), PVLM_ERR_UNSUPPORTED, "no int3 graphs", "precision the bundle lacks");
  pvlm_options_init(&o);
  o.decoder = "fastest";
  expect(pvlm_open(bundle.c_str(), &o, &b), PVLM_ERR_ARGUMENT, "decoder must be", "unknown decoder");
  pvlm_options_init(&o);
  o.max_batch = 100000;
  expect(pvlm_open(bundle.c_str(), &o, &b), PVLM_ERR_LIMIT, "max_batch", "max_batch over the bundle's");
  pvlm_options_init(&o);
  o.encoder_chunk_pixels = -1;
  expect(pvlm_open(bundle.c_str(), &o, &b), PVLM_ERR_ARGUMENT, "encoder_chunk_pixels", "negative encoder chunk");
  {  // a caller built against ABI version 1 passes the shorter struct: the new field keeps its default
    pvlm_options_init(&o);
    o.struct_size = offsetof(pvlm_options, encoder_chunk_pixels);
    o.encoder_chunk_pixels = -1;  // not read
    check(pvlm_open(bundle.c_str(), &o, &b) == PVLM_OK, "version-1 options", pvlm_last_error());
    pvlm_close(b);
    b = nullptr;
  }

  // ---- a good bundle (no minimum crop: the 1-pixel-wide box below is described)
  pvlm_options_init(&o);
  o.threads = 1;
  o.min_crop_width = o.min_crop_height = 0;
  pvlm_status st = pvlm_open(bundle.c_str(), &o, &b);
  check(st == PVLM_OK && b != nullptr, "open", pvlm_last_error());
  if (st != PVLM_OK) return 1;
  pvlm_info info{};
  check(pvlm_info_get(b, &info) == PVLM_OK && info.max_batch >= 2 && std::strlen(info.bundle_id) == 16, "info");
  const int W = 96, H = 64;
  std::vector<uint8_t> rgb = frame(W, H, 3, 1);
  pvlm_results* r = reinterpret_cast<pvlm_results*>(&failures);
  pvlm_image ok_image = image_of(rgb, W, H, PVLM_PIXEL_RGB);

  expect(pvlm_describe(b, nullptr, 1, 0, &r), PVLM_ERR_ARGUMENT, "images is NULL", "NULL images");
  check(r == nullptr, "failed describe leaves *out NULL");
  expect(pvlm_describe(b, &ok_image, 1, 0, nullptr), PVLM_ERR_ARGUMENT, "out is NULL", "NULL out");
  expect(pvlm_describe(nullptr, &ok_image, 1, 0, &r), PVLM_ERR_ARGUMENT, "bundle is NULL", "NULL bundle");
  expect(pvlm_describe(b, &ok_image, 0, 0, &r), PVLM_ERR_ARGUMENT, "count", "empty batch");
  struct Bad {
    const char* name;
    std::function<void(pvlm_image&)> edit;
    pvlm_status want;
    const char* needle;
  };
  pvlm_box outside{200, 10, 300, 40}, nan_box{std::nanf(""), 0, 10, 10}, inverted{50, 40, 20, 10};
  std::vector<Bad> bad = {
      {"NULL buffer", [](pvlm_image& im) { im.data = nullptr; }, PVLM_ERR_ARGUMENT, "data is NULL"},
      {"zero width", [](pvlm_image& im) { im.width = 0; }, PVLM_ERR_ARGUMENT, "width and height"},
      {"negative height", [](pvlm_image& im) { im.height = -4; }, PVLM_ERR_ARGUMENT, "width and height"},
      {"negative stride", [](pvlm_image& im) { im.stride = -1; }, PVLM_ERR_ARGUMENT, "stride"},
      {"stride under a row", [](pvlm_image& im) { im.stride = W * 3 - 1; }, PVLM_ERR_ARGUMENT, "stride"},
      {"unknown format", [](pvlm_image& im) { im.format = 42; }, PVLM_ERR_ARGUMENT, "pixel format"},
      {"box outside the frame", [&](pvlm_image& im) { im.box = &outside; }, PVLM_ERR_BOX, "no area inside"},
      {"inverted box", [&](pvlm_image& im) { im.box = &inverted; }, PVLM_ERR_BOX, "no area inside"},
      {"NaN box", [&](pvlm_image& im) { im.box = &nan_box; }, PVLM_ERR_BOX, "finite"},
  };
  for (const auto& c : bad) {
    std::vector<pvlm_image> batch = {ok_image, ok_image};
    c.edit(batch[1]);
    expect(pvlm_describe(b, batch.data(), batch.size(), 0, &r), c.want, c.needle, c.name);
    check(std::string(pvlm_last_error()).find("input 1") != std::string::npos ||
              std::string(pvlm_last_error()).find("box 1") != std::string::npos,
          std::string(c.name) + " names the input");
  }
  std::vector<pvlm_image> over(size_t(info.max_batch) + 1, ok_image);
  expect(pvlm_describe(b, over.data(), over.size(), 0, &r), PVLM_ERR_LIMIT, "exceeds max_batch", "batch over the limit");
  expect(pvlm_describe(b, &ok_image, 1, info.max_positions + 1, &r), PVLM_ERR_LIMIT, "max_new_tokens",
         "max_new_tokens over max_positions");
  expect(pvlm_describe(b, &ok_image, 1, -1, &r), PVLM_ERR_LIMIT, "max_new_tokens", "negative max_new_tokens");
  std::vector<float> px(size_t(3) * info.input_height * info.input_width);
  expect(pvlm_preprocess(b, &ok_image, px.data(), px.size() - 1), PVLM_ERR_ARGUMENT, "out_len", "short preprocess buffer");
  expect(pvlm_generate(b, nullptr, 1, 0, 1, 0, &r), PVLM_ERR_ARGUMENT, "pixels is NULL", "NULL pixels");
  expect(pvlm_generate(b, px.data(), 1, 0, 1, -1, &r), PVLM_ERR_ARGUMENT, "no_repeat_ngram_size", "negative guard");

  // ---- work: a batch mixing formats, strides and boxes (a 1-pixel-wide one included)
  std::vector<uint8_t> bgra = frame(W, H, 4, 2), gray = frame(W, H, 1, 3);
  std::vector<uint8_t> padded(size_t(W * 3 + 7) * H);
  for (int y = 0; y < H; ++y) std::memcpy(&padded[size_t(y) * (W * 3 + 7)], &rgb[size_t(y) * W * 3], size_t(W) * 3);
  pvlm_box thin{10, 5, 11, 60}, partly{-20, -20, 40, 30};
  std::vector<pvlm_image> batch = {ok_image, image_of(bgra, W, H, PVLM_PIXEL_BGRA), image_of(gray, W, H, PVLM_PIXEL_GRAY),
                                   image_of(rgb, W, H, PVLM_PIXEL_RGB, &thin), image_of(rgb, W, H, PVLM_PIXEL_RGB, &partly)};
  pvlm_image strided = image_of(padded, W, H, PVLM_PIXEL_RGB);
  strided.stride = W * 3 + 7;
  batch.push_back(strided);
  batch.resize(std::min<size_t>(batch.size(), size_t(info.max_batch)));
  st = pvlm_describe(b, batch.data(), batch.size(), 0, &r);
  check(st == PVLM_OK && r != nullptr && r->count == batch.size(), "describe a mixed batch", pvlm_last_error());
  if (st != PVLM_OK) return 1;
  auto reference = tokens_of(r);
  check(r->timings.batch == int32_t(batch.size()) && r->timings.steps >= 1 && r->timings.total_ms > 0, "timings");
  bool texts = true;
  for (size_t i = 0; i < r->count; ++i) texts = texts && r->items[i].text != nullptr;
  check(texts, "every description has a text");
  if (batch.size() > 5) check(reference[5] == reference[0], "a row stride gives the same description");
  pvlm_results_free(r);

  // the same pixels through pvlm_preprocess + pvlm_generate
  std::vector<float> all(px.size() * batch.size());
  for (size_t i = 0; i < batch.size(); ++i) pvlm_preprocess(b, &batch[i], all.data() + i * px.size(), px.size());
  st = pvlm_generate(b, all.data(), batch.size(), 0, 1, info.no_repeat_ngram_size, &r);
  check(st == PVLM_OK && tokens_of(r) == reference, "generate on preprocessed pixels", pvlm_last_error());
  pvlm_results_free(r);
  st = pvlm_generate(b, all.data(), 1, 5, 0, 0, &r);
  check(st == PVLM_OK && r->items[0].n_tokens == 5 && r->timings.steps == 5, "fixed work decodes max_new_tokens");
  pvlm_results_free(r);

  // ---- one bundle, several threads
  std::vector<std::thread> pool;
  std::vector<int> same(4, 0);
  for (int t = 0; t < 4; ++t)
    pool.emplace_back([&, t] {
      for (int k = 0; k < 3; ++k) {
        pvlm_results* mine = nullptr;
        if (pvlm_describe(b, batch.data(), batch.size(), 0, &mine) == PVLM_OK && tokens_of(mine) == reference) ++same[t];
        pvlm_results_free(mine);
      }
    });
  for (auto& th : pool) th.join();
  check(same == std::vector<int>(4, 3), "4 threads sharing one bundle agree with one thread");

  // ---- the default minimum crop (1/8 of the input) refuses the 1-pixel-wide box
  pvlm_options_init(&o);
  o.threads = 1;
  pvlm_bundle* strict = nullptr;
  if (pvlm_open(bundle.c_str(), &o, &strict) == PVLM_OK) {
    expect(pvlm_describe(strict, batch.data(), std::min<size_t>(4, batch.size()), 0, &r), PVLM_ERR_BOX,
           "box 3: 1x55 px is smaller than the minimum crop", "a box under the minimum crop");
  } else {
    check(false, "open with the default minimum crop", pvlm_last_error());
  }
  pvlm_close(strict);

  // ---- the portable decoder gives the same tokens
  pvlm_options_init(&o);
  o.threads = 1;
  o.min_crop_width = o.min_crop_height = 0;
  o.decoder = "portable";
  pvlm_bundle* portable = nullptr;
  st = pvlm_open(bundle.c_str(), &o, &portable);
  if (st == PVLM_OK) {
    st = pvlm_describe(portable, batch.data(), batch.size(), 0, &r);
    check(st == PVLM_OK && tokens_of(r) == reference, "portable decoder agrees", pvlm_last_error());
    pvlm_results_free(r);
  } else {
    check(false, "open with the portable decoder", pvlm_last_error());
  }
  pvlm_close(portable);

  // ---- the C++ wrapper
  try {
    pvlm::Options wo;
    wo.threads = 1;
    wo.min_crop_width = wo.min_crop_height = 0;
    pvlm::Bundle wb(bundle.string(), wo);
    pvlm::Image whole(rgb.data(), W, H, PVLM_PIXEL_RGB);
    auto res = wb.describe({whole, pvlm::Image(rgb.data(), W, H, PVLM_PIXEL_RGB).crop(10, 5, 11, 60)});
    check(res.descriptions.size() == 2 && res.descriptions[0].tokens == reference[0] &&
              (batch.size() < 4 || res.descriptions[1].tokens == reference[3]),
          "C++ wrapper describes");
    bool threw = false;
    try {
      wb.describe({pvlm::Image(nullptr, W, H, PVLM_PIXEL_RGB)});
    } catch (const pvlm::Error& e) {
      threw = e.status() == PVLM_ERR_ARGUMENT;
    }
    check(threw, "C++ wrapper throws pvlm::Error with the status");
  } catch (const std::exception& e) {
    check(false, "C++ wrapper", e.what());
  }

  pvlm_close(b);
  pvlm_close(nullptr);
  pvlm_results_free(nullptr);
  check(std::string(pvlm_status_name(static_cast<pvlm_status>(77))) == "PVLM_ERR_UNKNOWN", "unknown status name");
  std::printf("%d failed\n", failures);
  return failures ? 1 : 0;
}
