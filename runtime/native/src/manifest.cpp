#include "manifest.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <regex>
#include <set>

#include "canonical_json.hpp"
#include "error.hpp"
#include "sha256.hpp"

namespace pvlm_core {
namespace {

// The largest sizes a manifest may declare (runtime/bundle.py, docs/bundle.md "Limits").
constexpr int64_t kMaxBatch = 4096, kMaxPositions = 4096, kMaxImageSide = 1024, kMaxVocab = 131072;
constexpr int64_t kMaxTokenChars = 128, kMaxLayers = 64, kMaxHeads = 64, kMaxDModel = 8192, kMaxVisual = 4096;
constexpr int64_t kMaxDim = int64_t(1) << 20, kMaxRank = 8;
const char* const kSpecialTokens[] = {"<pad>", "<bos>", "<eos>", "<unk>"};
const char* const kHashedSections[] = {"vocab", "special_tokens", "preprocess", "model", "limits"};
const std::set<std::string> kDtypes = {"float32", "float16", "bfloat16", "float64", "int64", "int32", "int16",
                                       "int8",    "uint8",   "uint16",   "uint32",  "uint64", "bool"};
const std::set<std::string> kEngineFormats = {"tensorrt-plan", "coreml-mlpackage"};

// Internal: where in the manifest (dotted) and what is wrong; becomes "invalid manifest: ...".
struct Invalid {
  std::string message;
};

[[noreturn]] void invalid(const std::string& message) { throw Invalid{message}; }

// A value as Python's json.dumps writes it, cut to 40 characters (runtime/bundle.py _short).
std::string dumps(const json& v) {
  if (v.is_array() || v.is_object()) {
    std::string s = v.is_array() ? "[" : "{";
    bool first = true;
    for (auto it = v.begin(); it != v.end(); ++it) {
      s += first ? "" : ", ";
      first = false;
      if (v.is_object()) s += json(it.key()).dump(-1, ' ', true) + ": ";
      s += dumps(it.value());
    }
    return s + (v.is_array() ? "]" : "}");
  }
  if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>() && std::abs(v.get<double>()) < 1e16)
    return json(v).dump() + (json(v).dump().find_first_of(".e") == std::string::npos ? ".0" : "");
  return v.dump(-1, ' ', true, json::error_handler_t::replace);
}

std::string short_json(const json& v) {
  std::string text = dumps(v);
  return text.size() <= 40 ? text : text.substr(0, 37) + "...";
}

size_t code_points(const std::string& s) {
  return size_t(std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

const json& get(const json& obj, const std::string& key) {
  static const json null_value;
  if (!obj.is_object()) return null_value;
  auto it = obj.find(key);
  return it == obj.end() ? null_value : *it;
}

const json& expect_object(const json& v, const std::string& where, const std::string& what) {
  if (!v.is_object()) invalid(where + ": expected " + what + ", got " + short_json(v));
  return v;
}

const json& expect_array(const json& v, const std::string& where, const std::string& what) {
  if (!v.is_array()) invalid(where + ": expected " + what + ", got " + short_json(v));
  return v;
}

const std::string& expect_string(const json& v, const std::string& where, const std::string& what) {
  if (!v.is_string()) invalid(where + ": expected " + what + ", got " + short_json(v));
  return v.get_ref<const std::string&>();
}

int64_t expect_int(const json& v, const std::string& where, const std::string& what) {
  if (!v.is_number_integer()) invalid(where + ": expected " + what + ", got " + short_json(v));
  if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)) return INT64_MAX;
  return v.get<int64_t>();
}

const json& section(const json& data, const std::string& key, const std::string& where = "") {
  std::string name = where.empty() ? key : where + "." + key;
  if (!data.contains(key)) invalid(name + ": missing");
  return expect_object(data[key], name, "an object");
}

int bounded_int(const json& data, const std::string& key, const std::string& where, int64_t high, int64_t low = 1) {
  if (!data.contains(key)) invalid(where + "." + key + ": missing");
  int64_t v = expect_int(data[key], where + "." + key, "an integer");
  if (v < low || v > high)
    invalid(where + "." + key + ": expected " + std::to_string(low) + " to " + std::to_string(high) + ", got " +
            dumps(data[key]));
  return int(v);
}

std::array<float, 3> numbers(const json& data, const std::string& key, const std::string& where, double lo, double hi,
                             const std::string& range) {
  const json& values = get(data, key);
  bool ok = values.is_array() && values.size() == 3 &&
            std::all_of(values.begin(), values.end(), [](const json& v) {
              return v.is_number() && std::isfinite(v.get<double>());
            });
  if (!ok) invalid(where + "." + key + ": expected a list of 3 finite numbers, got " + short_json(values));
  std::array<float, 3> out{};
  for (int c = 0; c < 3; ++c) {
    double v = values[c].get<double>();
    if (v < lo || v > hi) invalid(where + "." + key + ": expected numbers from " + range + ", got " + short_json(values));
    out[c] = static_cast<float>(v);  // numpy: np.asarray(mean, np.float32)
  }
  return out;
}

// A manifest file name: a non-empty relative path without "..", on POSIX and on Windows.
const std::string& relative_path(const json& v, const std::string& where) {
  const std::string& s = expect_string(v, where, "a file name");
  auto refuse = [&](const char* why) { invalid(where + ": " + short_json(v) + " " + why); };
  bool drive = s.size() >= 2 && s[1] == ':';  // ntpath.splitdrive: any character before the colon
  bool unc = s.size() >= 2 && (s[0] == '\\' || s[0] == '/') && (s[1] == '\\' || s[1] == '/');
  if (s.empty() || s.find('\0') != std::string::npos || s[0] == '/' || drive || unc)
    refuse("is not a relative path inside the bundle");
  std::vector<std::string> parts;  // split on both separators: Windows reads '\' too
  std::string part;
  for (char c : s + "/") {
    if (c == '/' || c == '\\') {
      parts.push_back(part);
      part.clear();
    } else {
      part += c;
    }
  }
  bool only_dots = std::all_of(parts.begin(), parts.end(), [](const std::string& p) { return p.empty() || p == "."; });
  if (std::count(parts.begin(), parts.end(), "..") > 0 || only_dots) refuse("points outside the bundle");
  return s;
}

Tensors tensors(const json& data, const std::string& where) {
  expect_object(data, where, "an object of tensors");
  Tensors out;
  for (auto it = data.begin(); it != data.end(); ++it) {
    std::string at = where + "." + it.key();
    const json& t = expect_object(it.value(), at, "an object with dtype and shape");
    TensorEntry e;
    e.dtype = expect_string(get(t, "dtype"), at + ".dtype", "a string");
    if (!kDtypes.count(e.dtype))
      invalid(at + ".dtype: " + short_json(get(t, "dtype")) +
              " is not one of float32, float16, bfloat16, float64, int64, int32, int16, int8, uint8, uint16, uint32, "
              "uint64, bool");
    const json& shape = expect_array(get(t, "shape"), at + ".shape", "a list");
    if (int64_t(shape.size()) > kMaxRank) invalid(at + ".shape: more than " + std::to_string(kMaxRank) + " dimensions");
    for (size_t i = 0; i < shape.size(); ++i) {
      const json& d = shape[i];
      std::string ati = at + ".shape[" + std::to_string(i) + "]";
      if (d.is_number_integer()) {
        int64_t v = expect_int(d, ati, "an integer or a dimension name");
        if (v < 1 || v > kMaxDim) invalid(ati + ": expected 1 to " + std::to_string(kMaxDim) + ", got " + dumps(d));
        e.dims.push_back(v);
        e.dim_names.emplace_back();
      } else if (d.is_string()) {
        size_t n = code_points(d.get<std::string>());
        if (n == 0 || n > 64) invalid(ati + ": a dimension name of 1 to 64 characters, got " + short_json(d));
        e.dims.push_back(-1);
        e.dim_names.push_back(d.get<std::string>());
      } else {
        invalid(ati + ": expected an integer or a dimension name, got " + short_json(d));
      }
    }
    out.emplace_back(it.key(), std::move(e));
  }
  return out;
}

// (where, value) of every "file"/"path" field at any depth, except in the free-form top-level sections.
void named_files(const json& data, const std::string& where, std::vector<std::pair<std::string, const json*>>& out) {
  static const std::set<std::string> kPathKeys = {"file", "path"};
  static const std::set<std::string> kNotFiles = {"source", "verification", "producer", "model"};
  if (data.is_object()) {
    for (auto it = data.begin(); it != data.end(); ++it) {
      std::string at = where.empty() ? it.key() : where + "." + it.key();
      if (kPathKeys.count(it.key()) && !it.value().is_object() && !it.value().is_array())
        out.emplace_back(at, &it.value());
      else if (!(where.empty() && kNotFiles.count(it.key())))
        named_files(it.value(), at, out);
    }
  } else if (data.is_array()) {
    for (size_t i = 0; i < data.size(); ++i) named_files(data[i], where + "[" + std::to_string(i) + "]", out);
  }
}

ModelConfig model_config(const json& data) {
  const json& m = expect_object(data, "model", "an object");
  ModelConfig c;
  c.n_layers = bounded_int(m, "n_layers", "model", kMaxLayers);
  c.n_heads = bounded_int(m, "n_heads", "model", kMaxHeads);
  c.d_model = bounded_int(m, "d_model", "model", kMaxDModel);
  c.vocab_size = bounded_int(m, "vocab_size", "model", kMaxVocab);
  c.max_len = bounded_int(m, "max_len", "model", kMaxPositions);
  if (c.d_model % c.n_heads)
    invalid("model.d_model: " + std::to_string(c.d_model) + " is not divisible by n_heads " + std::to_string(c.n_heads));
  for (const char* key : {"backbone", "visual_tokens"})
    if (!get(m, key).is_null()) expect_string(m[key], std::string("model.") + key, "a string");
  const json& size = get(m, "image_size");
  if (!size.is_null()) {
    bool ok = size.is_array() && size.size() == 2 && std::all_of(size.begin(), size.end(), [](const json& v) {
                return v.is_number_integer() && v.get<int64_t>() >= 1 && v.get<int64_t>() <= kMaxImageSide;
              });
    if (!ok)
      invalid("model.image_size: expected [height, width] from 1 to " + std::to_string(kMaxImageSide) + ", got " +
              short_json(size));
  }
  return c;
}

Preprocess preprocessing(const json& data) {
  const json& pre = expect_object(data, "preprocess", "an object");
  const std::pair<const char*, const char*> defaults[] = {
      {"channel_order", "RGB"}, {"resize", "stretch"}, {"interpolation", "bilinear"}, {"layout", "NCHW"}};
  for (const auto& [key, value] : defaults) {
    const json& v = get(pre, key);
    if (!v.is_null() && !(v.is_string() && v.get<std::string>() == value))
      invalid(std::string("preprocess.") + key + ": " + short_json(v) + " is not supported (this runtime implements " +
              value + ")");
    if (v.is_null() && pre.contains(key))  // null is not the default either
      invalid(std::string("preprocess.") + key + ": null is not supported (this runtime implements " + value + ")");
  }
  if (pre.contains("scale")) {
    const json& s = pre["scale"];
    bool ok = s.is_number() && std::isfinite(s.get<double>()) &&
              std::abs(s.get<double>() - 1.0 / 255) <= 1e-9 * std::max(std::abs(s.get<double>()), 1.0 / 255);
    if (!ok) invalid("preprocess.scale: " + short_json(s) + " is not supported (this runtime implements 1/255)");
  }
  Preprocess p;
  p.height = bounded_int(pre, "height", "preprocess", kMaxImageSide);
  p.width = bounded_int(pre, "width", "preprocess", kMaxImageSide);
  p.mean = numbers(pre, "mean", "preprocess", -1000.0, 1000.0, "-1000 to 1000");
  p.std = numbers(pre, "std", "preprocess", 1e-3, 1000.0, "0.001 to 1000");
  return p;
}

void content_hash_shape(const json& data) {
  if (data.is_null()) return;
  expect_object(data, "content_hash", "an object");
  const json& algorithm = get(data, "algorithm");
  if (!(algorithm.is_string() && algorithm.get<std::string>() == kContentHashAlgorithm))
    invalid("content_hash.algorithm: " + short_json(algorithm) + " is not known to this runtime (" +
            kContentHashAlgorithm + "); re-export the bundle");
  static const std::regex kSha256("[0-9a-f]{64}");
  for (const char* key : {"sections", "graphs"}) {
    const json& digests = section(data, key, "content_hash");
    for (auto it = digests.begin(); it != digests.end(); ++it)
      if (!it.value().is_string() || !std::regex_match(it.value().get<std::string>(), kSha256))
        invalid(std::string("content_hash.") + key + "." + it.key() + ": expected 64 lowercase hex digits, got " +
                short_json(it.value()));
  }
}

// ---- the graph contract (runtime/bundle.py _CONTRACT): what the runtime feeds each graph and reads back.
// A shape template: "B" and "S" stand for any dimension name (batch, cache), digits for themselves, the
// other symbols for sizes the rest of the manifest fixes.
using Spec = std::pair<std::string, std::string>;  // dtype, template
using Specs = std::vector<std::pair<std::string, Spec>>;

const std::map<std::string, std::string> kSources = {
    {"L", "model.n_layers"},
    {"H", "model.n_heads"},
    {"D", "model.d_model"},
    {"Dh", "model.d_model / n_heads"},
    {"V", "the vocabulary size (vocab.tokens)"},
    {"HT", "preprocess.height"},
    {"WD", "preprocess.width"},
    {"N", "the encoder's visual tokens (graphs.encoder.outputs.cross_k.shape[3])"},
    {"HN", "n_heads x the encoder's visual tokens"},
    {"A", "the attribute heads' values (graphs.encoder.attribute_heads.fields)"}};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t next = s.find(' ', pos);
    if (next == std::string::npos) next = s.size();
    out.push_back(s.substr(pos, next - pos));
    pos = next + 1;
  }
  return out;
}

json shape_json(const TensorEntry& t) {
  json out = json::array();
  for (size_t i = 0; i < t.dims.size(); ++i) out.push_back(t.dims[i] >= 0 ? json(t.dims[i]) : json(t.dim_names[i]));
  return out;
}

void names(const Tensors& tensors, const Specs& expected, const std::string& at) {
  std::vector<std::string> missing, extra;
  for (const auto& [n, s] : expected)
    if (std::none_of(tensors.begin(), tensors.end(), [&](const auto& t) { return t.first == n; })) missing.push_back(n);
  for (const auto& [n, t] : tensors)
    if (std::none_of(expected.begin(), expected.end(), [&](const auto& e) { return e.first == n; })) extra.push_back(n);
  if (missing.empty() && extra.empty()) return;
  std::string msg;
  if (!missing.empty()) {
    msg = "missing ";
    for (size_t i = 0; i < std::min<size_t>(3, missing.size()); ++i) msg += (i ? ", " : "") + missing[i];
    if (missing.size() > 3) msg += "...";
  }
  if (!extra.empty()) {
    msg += std::string(msg.empty() ? "" : "; ") + "unexpected ";
    for (size_t i = 0; i < std::min<size_t>(3, extra.size()); ++i) msg += (i ? ", " : "") + short_json(json(extra[i]));
    if (extra.size() > 3) msg += "...";
  }
  invalid(at + ": " + msg);
}

void match(const TensorEntry& t, const Spec& spec, const std::map<std::string, int64_t>& env, const std::string& at) {
  const auto& [dtype, templ] = spec;
  std::vector<std::string> dims = split(templ);
  if (t.dtype != dtype) invalid(at + ".dtype: expected " + dtype + ", got " + t.dtype);
  if (t.dims.size() != dims.size())
    invalid(at + ".shape: expected " + std::to_string(dims.size()) + " dimensions, got " + short_json(shape_json(t)));
  for (size_t i = 0; i < dims.size(); ++i) {
    const std::string& sym = dims[i];
    std::string ati = at + ".shape[" + std::to_string(i) + "]";
    json d = t.dims[i] >= 0 ? json(t.dims[i]) : json(t.dim_names[i]);
    if (sym == "B" || sym == "S") {
      if (t.dims[i] >= 0) invalid(ati + ": expected a dimension name (dynamic), got " + std::to_string(t.dims[i]));
    } else if (std::all_of(sym.begin(), sym.end(), ::isdigit)) {
      if (t.dims[i] != std::stoll(sym)) invalid(ati + ": expected " + sym + ", got " + short_json(d));
    } else if (t.dims[i] != env.at(sym)) {
      invalid(ati + " is " + short_json(d) + ", but " + kSources.at(sym) + " is " + std::to_string(env.at(sym)));
    }
  }
}

void check_side(const GraphEntry& g, bool inputs, const Specs& specs, const std::map<std::string, int64_t>& env,
                const std::string& name) {
  const Tensors& tensors = inputs ? g.inputs : g.outputs;
  std::string at = "graphs." + name + (inputs ? ".inputs" : ".outputs");
  names(tensors, specs, at);
  for (const auto& [tensor, spec] : specs)
    match(*(inputs ? g.input(tensor) : g.output(tensor)), spec, env, at + "." + tensor);
}

}  // namespace

const TensorEntry* GraphEntry::input(const std::string& name) const {
  for (const auto& [n, t] : inputs)
    if (n == name) return &t;
  return nullptr;
}

const TensorEntry* GraphEntry::output(const std::string& name) const {
  for (const auto& [n, t] : outputs)
    if (n == name) return &t;
  return nullptr;
}

json parse_manifest_json(const std::string& text) {
  if (text.size() >= 3 && text.compare(0, 3, "\xEF\xBB\xBF") == 0)
    throw std::invalid_argument("Unexpected UTF-8 BOM (decode using utf-8-sig)");
  std::vector<std::set<std::string>> keys;  // per open object
  json::parser_callback_t check = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth > kMaxJsonDepth) throw std::invalid_argument("nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    if (event == json::parse_event_t::object_start) {
      keys.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      keys.pop_back();
    } else if (event == json::parse_event_t::key) {
      const std::string& k = parsed.get_ref<const std::string&>();
      if (!keys.back().insert(k).second) throw std::invalid_argument("duplicate key " + short_json(json(k)));
    }
    return true;
  };
  try {
    return json::parse(text, check);
  } catch (const json::exception& e) {
    throw std::invalid_argument(e.what());
  }
}

Manifest Manifest::parse(const json& data) {
  try {
    Manifest m;
    m.raw = data;
    expect_object(data, "manifest", "a JSON object");
    const json& format = get(data, "format");
    if (!format.is_string() || format.get<std::string>() != kBundleFormat)
      invalid("format: not a PersonVLM bundle manifest (format " + short_json(format) + ")");
    const json& version = get(data, "version");
    bool known = false;
    for (int v : kSupportedVersions) known = known || (version.is_number() && version.get<double>() == v);
    if (!known)
      invalid("version: bundle format version " + short_json(version) + " is not supported (this runtime reads 1); "
              "re-export it");
    m.model = model_config(section(data, "model"));
    const json& tokens = expect_array(get(section(data, "vocab"), "tokens"), "vocab.tokens", "a list of strings");
    if (tokens.empty() || !std::all_of(tokens.begin(), tokens.end(), [](const json& t) { return t.is_string(); }))
      invalid("vocab.tokens: expected a non-empty list of strings");
    if (int64_t(tokens.size()) > kMaxVocab)
      invalid("vocab.tokens: " + std::to_string(tokens.size()) + " tokens, more than " + std::to_string(kMaxVocab));
    for (const json& t : tokens) m.tokens.push_back(t.get<std::string>());
    bool specials_first = m.tokens.size() >= 4;
    for (size_t i = 0; specials_first && i < 4; ++i) specials_first = m.tokens[i] == kSpecialTokens[i];
    if (!specials_first) {
      json first = json::array();
      for (size_t i = 0; i < std::min<size_t>(4, tokens.size()); ++i) first.push_back(tokens[i]);
      invalid("vocab.tokens: must start with <pad>, <bos>, <eos>, <unk>, got " + short_json(first));
    }
    for (size_t i = 0; i < m.tokens.size(); ++i) {
      size_t n = code_points(m.tokens[i]);
      if (n == 0 || int64_t(n) > kMaxTokenChars)
        invalid("vocab.tokens[" + std::to_string(i) + "]: expected 1 to " + std::to_string(kMaxTokenChars) +
                " characters, got " + short_json(tokens[i]));
    }
    if (std::set<std::string>(m.tokens.begin(), m.tokens.end()).size() != m.tokens.size())
      invalid("vocab.tokens: a token appears twice");
    const json& special = section(data, "special_tokens");
    for (int i = 0; i < 4; ++i) {
      std::string token = kSpecialTokens[i], name = token.substr(1, token.size() - 2);
      if (!special.contains(name)) invalid("special_tokens." + name + ": missing");
      int64_t id = expect_int(special[name], "special_tokens." + name, "a token id");
      if (id != i)
        invalid("special_tokens." + name + ": expected " + std::to_string(i) + " (the id of " + token + "), got " +
                dumps(special[name]));
      m.special[name] = id;
    }
    for (auto it = special.begin(); it != special.end(); ++it)
      if (!m.special.count(it.key())) invalid("special_tokens." + it.key() + ": not a special token (pad, bos, eos, unk)");
    m.preprocess = preprocessing(section(data, "preprocess"));
    const json& graphs = section(data, "graphs");
    for (auto it = graphs.begin(); it != graphs.end(); ++it) {
      std::string at = "graphs." + it.key();
      expect_object(it.value(), at, "an object with file, inputs and outputs");
      GraphEntry g;
      g.file = relative_path(get(it.value(), "file"), at + ".file");
      g.inputs = tensors(get(it.value(), "inputs"), at + ".inputs");
      g.outputs = tensors(get(it.value(), "outputs"), at + ".outputs");
      m.graphs[it.key()] = std::move(g);
      m.graph_order.push_back(it.key());
    }
    for (const char* name : {"encoder", "decoder"})
      if (!m.graphs.count(name)) invalid(std::string("graphs.") + name + ": missing");
    const json& lim = section(data, "limits");
    m.limits = {bounded_int(lim, "max_batch", "limits", kMaxBatch), bounded_int(lim, "max_new_tokens", "limits", kMaxPositions),
                bounded_int(lim, "max_positions", "limits", kMaxPositions)};
    if (m.limits.max_new_tokens > m.limits.max_positions)
      invalid("limits.max_new_tokens: " + std::to_string(m.limits.max_new_tokens) + " exceeds max_positions " +
              std::to_string(m.limits.max_positions));
    static const std::regex kSha256("[0-9a-f]{64}");
    const json& artifacts = section(data, "artifacts");
    for (auto it = artifacts.begin(); it != artifacts.end(); ++it) {
      relative_path(json(it.key()), "artifacts[" + short_json(json(it.key())) + "]");
      expect_object(it.value(), "artifacts." + it.key(), "an object with sha256");
      const std::string& sha = expect_string(get(it.value(), "sha256"), "artifacts." + it.key() + ".sha256", "a hex sha256");
      if (!std::regex_match(sha, kSha256))
        invalid("artifacts." + it.key() + ".sha256: expected 64 lowercase hex digits, got " + short_json(json(sha)));
      m.artifacts[it.key()] = sha;
    }
    static const json kNoVariants = json::object();
    const json& variants = data.contains("variants") ? data["variants"] : kNoVariants;
    expect_object(variants, "variants", "an object");
    std::vector<std::string> variant_files;
    for (auto it = variants.begin(); it != variants.end(); ++it) {
      std::string at = "variants." + it.key();
      const json& files = expect_object(get(expect_object(it.value(), at, "an object with graphs"), "graphs"),
                                        at + ".graphs", "an object");
      auto& out = m.variants[it.key()];
      for (auto f = files.begin(); f != files.end(); ++f) {
        if (!m.graphs.count(f.key())) invalid(at + ".graphs." + f.key() + ": not a graph of the bundle");
        out[f.key()] = relative_path(f.value(), at + ".graphs." + f.key());
        variant_files.push_back(out[f.key()]);
      }
    }
    std::vector<std::string> unlisted;
    for (const auto& name : m.graph_order)
      if (!m.artifacts.count(m.graphs[name].file)) unlisted.push_back(m.graphs[name].file);
    for (const auto& file : variant_files)
      if (!m.artifacts.count(file)) unlisted.push_back(file);
    if (!unlisted.empty()) {
      std::string list;
      for (const auto& f : unlisted) list += (list.empty() ? "" : ", ") + f;
      invalid("artifacts: no sha256 for " + list);
    }
    std::vector<std::pair<std::string, const json*>> named;
    named_files(data, "", named);
    for (const auto& [at, value] : named) relative_path(*value, at);
    static const json kNoEngines = json::array();
    const json& engines = expect_array(data.contains("engines") ? data["engines"] : kNoEngines, "engines", "a list");
    for (size_t i = 0; i < engines.size(); ++i) {
      const json& e = expect_object(engines[i], "engines[" + std::to_string(i) + "]", "an object");
      std::string file = e.contains("file") ? (e["file"].is_string() ? e["file"].get<std::string>() : dumps(e["file"])) : "?";
      std::string missing;
      for (const char* k : {"format", "graph", "file", "precision", "sha256", "bytes"})
        if (!e.contains(k)) missing += (missing.empty() ? "" : ", ") + std::string(k);
      if (!missing.empty()) invalid("engines: engine entry " + file + ": missing " + missing);
      if (!e["format"].is_string() || !kEngineFormats.count(e["format"].get<std::string>()))
        invalid("engines: engine entry " + file + ": unknown format " + dumps(e["format"]) +
                " (known: tensorrt-plan, coreml-mlpackage)");
    }
    content_hash_shape(get(data, "content_hash"));
    // Manifest.files(): graphs, artefacts, variants, then any file/path field; first mention kept.
    std::vector<std::string> files;
    for (const auto& name : m.graph_order) files.push_back(m.graphs[name].file);
    for (auto it = artifacts.begin(); it != artifacts.end(); ++it) files.push_back(it.key());
    files.insert(files.end(), variant_files.begin(), variant_files.end());
    for (const auto& [at, value] : named) files.push_back(value->get<std::string>());
    std::set<std::string> seen;
    for (auto& f : files)
      if (seen.insert(f).second) m.files.push_back(f);
    return m;
  } catch (const Invalid& e) {
    throw Error(PVLM_ERR_MANIFEST, "invalid manifest: " + e.message);
  } catch (const json::exception& e) {  // a type the checks above let through by mistake
    throw Error(PVLM_ERR_MANIFEST, std::string("invalid manifest: ") + e.what());
  }
}

void Manifest::check_consistency() const {
  try {
    const ModelConfig& m = model;
    const Preprocess& pre = preprocess;
    if (m.vocab_size != int(tokens.size()))
      invalid("model.vocab_size is " + std::to_string(m.vocab_size) + ", but vocab.tokens has " +
              std::to_string(tokens.size()) + " tokens");
    const json& size = get(raw["model"], "image_size");
    if (!size.is_null() && (size[0].get<int64_t>() != pre.height || size[1].get<int64_t>() != pre.width))
      invalid("model.image_size is " + dumps(size) + ", but preprocess is " + std::to_string(pre.height) + "x" +
              std::to_string(pre.width));
    for (const char* key : {"mean", "std"}) {
      const json& a = get(raw["model"], key);
      const json& b = raw["preprocess"][key];
      if (raw["model"].contains(key) && a != b)
        invalid(std::string("model.") + key + " is " + short_json(a) + ", but preprocess." + key + " is " + short_json(b));
    }
    if (limits.max_positions > m.max_len)
      invalid("limits.max_positions is " + std::to_string(limits.max_positions) + ", but model.max_len is " +
              std::to_string(m.max_len));
    const TensorEntry* cross_k = graphs.at("encoder").output("cross_k");
    int64_t visual = cross_k != nullptr && cross_k->dims.size() == 5 ? cross_k->dims[3] : -1;
    if (visual < 1 || visual > kMaxVisual)
      invalid("graphs.encoder.outputs.cross_k: expected shape [" + std::to_string(m.n_layers) + ", batch, " +
              std::to_string(m.n_heads) + ", visual tokens (1 to " + std::to_string(kMaxVisual) + "), " +
              std::to_string(m.head_dim()) + "]");
    std::map<std::string, int64_t> env = {
        {"L", m.n_layers}, {"H", m.n_heads}, {"D", m.d_model},  {"Dh", m.head_dim()},        {"V", int64_t(tokens.size())},
        {"HT", pre.height}, {"WD", pre.width}, {"N", visual}, {"HN", m.n_heads * visual}};
    const Spec kv = {"float32", "L B H N Dh"};
    const Specs step_in = {{"tokens", {"int64", "B 1"}}, {"positions", {"int64", "B 1"}}};
    const Specs step_out = {{"logits", {"float32", "B V"}}, {"next_ids", {"int64", "B"}}};
    check_side(graphs.at("encoder"), true, {{"pixels", {"float32", "B 3 HT WD"}}}, env, "encoder");
    // An encoder with attribute heads has a third output, every head's probabilities (B, values), which this
    // runtime does not read (graphs.encoder.attribute_heads, docs/bundle.md).
    Specs enc_out_specs = {{"cross_k", kv}, {"cross_v", kv}};
    const json& enc_raw = raw.at("graphs").at("encoder");
    if (enc_raw.contains("attribute_heads")) {
      const json& heads = enc_raw.at("attribute_heads");
      if (!heads.is_object() || !heads.contains("output") || !heads.at("output").is_string() ||
          !heads.contains("fields") || !heads.at("fields").is_array())
        invalid("graphs.encoder.attribute_heads: expected an object with output and fields");
      int64_t values = 0;
      for (const json& f : heads.at("fields"))
        if (f.is_object() && f.contains("values") && f.at("values").is_array()) values += int64_t(f.at("values").size());
      env["A"] = values;
      enc_out_specs.push_back({heads.at("output").get<std::string>(), {"float32", "B A"}});
    }
    check_side(graphs.at("encoder"), false, enc_out_specs, env, "encoder");
    Specs dec_in = step_in;
    dec_in.insert(dec_in.end(), {{"cross_k", kv}, {"cross_v", kv}, {"cache_k", {"float32", "L B H S Dh"}},
                                 {"cache_v", {"float32", "L B H S Dh"}}});
    Specs dec_out = step_out;
    dec_out.insert(dec_out.end(), {{"new_k", {"float32", "L B H 1 Dh"}}, {"new_v", {"float32", "L B H 1 Dh"}}});
    check_side(graphs.at("decoder"), true, dec_in, env, "decoder");
    check_side(graphs.at("decoder"), false, dec_out, env, "decoder");
    const auto& enc_out = graphs.at("encoder").outputs;
    bool in_order = enc_out.size() == enc_out_specs.size();
    for (size_t i = 0; in_order && i < enc_out.size(); ++i) in_order = enc_out[i].first == enc_out_specs[i].first;
    if (!in_order) invalid(enc_out_specs.size() == 2 ? "graphs.encoder.outputs: expected cross_k then cross_v"
                                                     : "graphs.encoder.outputs: expected cross_k then cross_v then " +
                                                           enc_out_specs[2].first);
    if (graphs.count("cross_ort") && graphs.count("decoder_ort")) {  // one without the other is never run
      bool tables = graphs.at("decoder_ort").input("cross_qk_0") != nullptr;
      Specs form = tables ? Specs{{"cross_qk", {"float32", "B HN D"}}, {"cross_qkb", {"float32", "B 1 HN"}},
                                  {"cross_ov", {"float32", "B HN D"}}}
                          : Specs{{"cross_k", {"float32", "B H N Dh"}}, {"cross_v", {"float32", "B H N Dh"}}};
      Specs cross, inputs = step_in, outputs = step_out;
      for (int i = 0; i < m.n_layers; ++i)
        for (const auto& [kind, spec] : form) cross.push_back({kind + "_" + std::to_string(i), spec});
      inputs.insert(inputs.end(), cross.begin(), cross.end());
      inputs.push_back({"cache_indirection", {"int32", "B 1 S"}});
      for (int i = 0; i < m.n_layers; ++i)
        for (const char* k : {"k", "v"}) {
          inputs.push_back({std::string("past_") + k + "_" + std::to_string(i), {"float32", "B H S Dh"}});
          outputs.push_back({std::string("present_") + k + "_" + std::to_string(i), {"float32", "B H S Dh"}});
        }
      check_side(graphs.at("cross_ort"), true, {{"cross_k", kv}, {"cross_v", kv}}, env, "cross_ort");
      check_side(graphs.at("cross_ort"), false, cross, env, "cross_ort");
      check_side(graphs.at("decoder_ort"), true, inputs, env, "decoder_ort");
      check_side(graphs.at("decoder_ort"), false, outputs, env, "decoder_ort");
    }
  } catch (const Invalid& e) {
    throw Error(PVLM_ERR_MANIFEST, "invalid manifest: " + e.message);
  }
}

void Manifest::check_content_hash() const {
  const json& recorded = get(raw, "content_hash");
  if (!recorded.is_object())
    throw Error(PVLM_ERR_INTEGRITY,
                "the manifest has no content_hash (exported before manifests were bound to their graphs); re-export "
                "the bundle with pvlm-export onnx, or open it with verify = 0 to trust it as it is");
  auto digest = [](const json& v, const std::string& at) {
    try {
      Sha256 h;
      h.update(canonical_json(v, kMaxJsonDepth));
      return h.hex();
    } catch (const std::invalid_argument& e) {
      throw Error(PVLM_ERR_MANIFEST, "invalid manifest: " + at + ": cannot be hashed (" + e.what() + ")");
    }
  };
  std::vector<std::string> changed;
  for (const char* key : kHashedSections) {
    const json& want = get(recorded["sections"], key);
    if (!want.is_string() || want.get<std::string>() != digest(raw[key], key)) changed.push_back(key);
  }
  for (const auto& name : graph_order) {
    json entry = raw["graphs"][name];
    entry["sha256"] = artifacts.at(graphs.at(name).file);
    const json& want = get(recorded["graphs"], name);
    if (!want.is_string() || want.get<std::string>() != digest(entry, "graphs." + name)) changed.push_back("graphs." + name);
  }
  if (!changed.empty()) {
    std::string list;
    for (const auto& c : changed) list += (list.empty() ? "" : ", ") + c;
    throw Error(PVLM_ERR_INTEGRITY,
                "content hash mismatch in " + list + ": the manifest was changed after export; re-export the bundle");
  }
}

}  // namespace pvlm_core
