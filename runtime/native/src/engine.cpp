#include "engine.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

#include "error.hpp"

// The API table is fetched (and checked) in process_env, not at static initialisation: an ONNX
// Runtime older than the headers must be an error message, not a crash while loading the library.
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>

namespace pvlm_core {
namespace fs = std::filesystem;

namespace {

// Older ONNX Runtime CPU kernels ignore past_sequence_length and write one slot past the shared
// buffer (runtime/backends/ort_bound.py): decoder_ort needs 1.31 or newer.
constexpr int kMinBoundMajor = 1, kMinBoundMinor = 31;


using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

std::mutex g_env_mutex;
Ort::Env* g_env = nullptr;  // one per process, never destroyed: ONNX Runtime keeps a single environment
bool g_env_shared = false;

// The process's ONNX Runtime environment; the first caller decides whether it has global thread pools.
Ort::Env& process_env(bool shared, int threads, bool* has_shared_pools) {
  std::lock_guard<std::mutex> lock(g_env_mutex);
  if (g_env == nullptr) {
    const OrtApi* api = OrtGetApiBase()->GetApi(ORT_API_VERSION);
    if (api == nullptr)
      throw Error(PVLM_ERR_UNSUPPORTED, std::string("ONNX Runtime ") + OrtGetApiBase()->GetVersionString() +
                                            " does not offer C API version " + std::to_string(ORT_API_VERSION) +
                                            " (the headers this library was built with)");
    Ort::InitApi(api);
    try {
      if (shared) {
        Ort::ThreadingOptions pools;
        pools.SetGlobalIntraOpNumThreads(threads);
        pools.SetGlobalInterOpNumThreads(1);
        g_env = new Ort::Env(pools, ORT_LOGGING_LEVEL_ERROR, "pvlm");
        g_env_shared = true;
      } else {
        g_env = new Ort::Env(ORT_LOGGING_LEVEL_ERROR, "pvlm");
      }
    } catch (const Ort::Exception& e) {
      throw Error(PVLM_ERR_RUNTIME, std::string("ONNX Runtime environment: ") + e.what());
    }
  }
  *has_shared_pools = g_env_shared;
  return *g_env;
}

bool version_at_least(const std::string& version, int major, int minor) {
  int a = 0, b = 0;
  if (std::sscanf(version.c_str(), "%d.%d", &a, &b) != 2) return false;
  return a > major || (a == major && b >= minor);
}

const char* dtype_name(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return "bool";
    default: return "another type";
  }
}

std::string shape_text(const std::vector<int64_t>& dims, const std::vector<std::string>* names = nullptr) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ", ";
    s += dims[i] >= 0 ? std::to_string(dims[i]) : names && !(*names)[i].empty() ? (*names)[i] : "?";
  }
  return s + ")";
}

// One graph's inputs and outputs as the session reports them: name -> (type, dims; -1 dynamic).
struct SessionIo {
  std::map<std::string, std::pair<ONNXTensorElementDataType, std::vector<int64_t>>> inputs, outputs;
  std::vector<std::string> output_order;
};

SessionIo session_io(const Ort::Session& s) {
  SessionIo io;
  Ort::AllocatorWithDefaultOptions alloc;
  for (size_t i = 0; i < s.GetInputCount(); ++i) {
    Ort::TypeInfo type = s.GetInputTypeInfo(i);  // owns what the tensor info below points into
    auto info = type.GetTensorTypeAndShapeInfo();
    io.inputs[s.GetInputNameAllocated(i, alloc).get()] = {info.GetElementType(), info.GetShape()};
  }
  for (size_t i = 0; i < s.GetOutputCount(); ++i) {
    Ort::TypeInfo type = s.GetOutputTypeInfo(i);
    auto info = type.GetTensorTypeAndShapeInfo();
    std::string name = s.GetOutputNameAllocated(i, alloc).get();
    io.outputs[name] = {info.GetElementType(), info.GetShape()};
    io.output_order.push_back(name);
  }
  return io;
}

// The manifest's inputs/outputs of a graph against what the loaded graph declares: same input names,
// every listed output present, same dtype and rank, same fixed dimensions.
void check_graph_io(const Ort::Session& s, const GraphEntry& entry, const fs::path& path) {
  SessionIo io = session_io(s);
  auto fail = [&](const std::string& what) {
    throw Error(PVLM_ERR_UNSUPPORTED, path.string() + ": " + what + "; the graph does not match the manifest");
  };
  auto compare = [&](const char* side, const std::vector<std::pair<std::string, TensorEntry>>& want,
                     const std::map<std::string, std::pair<ONNXTensorElementDataType, std::vector<int64_t>>>& have) {
    for (const auto& [name, t] : want) {
      auto it = have.find(name);
      if (it == have.end()) fail(std::string(side) + " " + name + " is in the manifest but not in the graph");
      const auto& [type, dims] = it->second;
      bool same = t.dtype == dtype_name(type) && t.dims.size() == dims.size();
      for (size_t i = 0; same && i < dims.size(); ++i) same = t.dims[i] < 0 || dims[i] < 0 || t.dims[i] == dims[i];
      if (!same)
        fail(std::string(side) + " " + name + " is " + t.dtype + " " + shape_text(t.dims, &t.dim_names) +
             " in the manifest but " + dtype_name(type) + " " + shape_text(dims) + " in the graph");
    }
  };
  compare("input", entry.inputs, io.inputs);
  compare("output", entry.outputs, io.outputs);
  for (const auto& [name, t] : io.inputs) {
    bool listed = false;
    for (const auto& w : entry.inputs) listed = listed || w.first == name;
    if (!listed) fail("input " + name + " is in the graph but not in the manifest");
  }
}

// A host buffer with a shape whose rows (along batch_axis) can be dropped in place; the memory is ours
// (a vector) or an ONNX Runtime output's.
struct Tensor {
  std::shared_ptr<void> owner;
  void* data = nullptr;
  std::vector<int64_t> shape;
  int batch_axis = 0;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  size_t elem = 4;

  size_t count() const {
    size_t n = 1;
    for (auto d : shape) n *= size_t(d);
    return n;
  }
  Ort::Value view(const OrtMemoryInfo* mem) const {
    return Ort::Value::CreateTensor(mem, data, count() * elem, shape.data(), shape.size(), type);
  }
  // Keep only rows (ascending indices into the current batch): a stable compaction, moving data down.
  void keep(const std::vector<int>& rows) {
    size_t outer = 1, inner = elem;
    for (int i = 0; i < batch_axis; ++i) outer *= size_t(shape[i]);
    for (size_t i = batch_axis + 1; i < shape.size(); ++i) inner *= size_t(shape[i]);
    const size_t batch = size_t(shape[batch_axis]), kept = rows.size();
    auto* p = static_cast<char*>(data);
    for (size_t o = 0; o < outer; ++o)
      for (size_t j = 0; j < kept; ++j) {
        char* dst = p + (o * kept + j) * inner;
        const char* src = p + (o * batch + size_t(rows[j])) * inner;
        if (dst != src) std::memmove(dst, src, inner);
      }
    shape[batch_axis] = int64_t(kept);
  }
};

template <class T>
Tensor zeros(std::vector<int64_t> shape, int batch_axis, ONNXTensorElementDataType type) {
  Tensor t;
  t.shape = std::move(shape);
  t.batch_axis = batch_axis;
  t.type = type;
  t.elem = sizeof(T);
  auto v = std::make_shared<std::vector<T>>(t.count(), T{});
  t.data = v->data();
  t.owner = v;
  return t;
}

Tensor from_value(Ort::Value&& value, int batch_axis) {
  Tensor t;
  auto owner = std::make_shared<Ort::Value>(std::move(value));
  auto info = owner->GetTensorTypeAndShapeInfo();
  t.shape = info.GetShape();
  t.type = info.GetElementType();
  t.elem = t.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 || t.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE ? 8
           : t.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16                                            ? 2
                                                                                                        : 4;
  t.data = owner->GetTensorMutableData<void>();
  t.batch_axis = batch_axis;
  t.owner = owner;
  return t;
}

// encoder_chunks in runtime/backends/ort.py: (start, size) of equal chunks of at most chunk_pixels input pixels
// (at least one image each).
std::vector<std::pair<int, int>> encoder_chunks(int batch, int64_t height, int64_t width, int64_t chunk_pixels) {
  const int per_call = int(std::max<int64_t>(1, std::min<int64_t>(batch, chunk_pixels / (height * width))));
  const int calls = (batch + per_call - 1) / per_call;
  const int size = (batch + calls - 1) / calls;
  std::vector<std::pair<int, int>> out;
  for (int start = 0; start < batch; start += size) out.emplace_back(start, std::min(size, batch - start));
  return out;
}

std::string first_line(const char* what) {
  std::string s = what ? what : "";
  s = s.substr(0, s.find('\n'));
  return s.size() > 200 ? s.substr(0, 200) : s;
}

}  // namespace

struct Engine::Sessions {
  Ort::MemoryInfo cpu = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  std::unique_ptr<Ort::Session> encoder, cross, step;
  std::vector<std::string> cross_names;  // cross_ort's outputs = decoder_ort's cross-attention inputs
  int layers = 0, heads = 0, head_dim = 0, vocab = 0;
  bool bound = false;
};

namespace {

// The encoder's cross_k, cross_v (L, batch, H, N, Dh) for float32 pixels (batch, 3, H, W), run in encoder_chunks:
// its activations grow with the pixels of one call, and ONNX Runtime plans their memory once per input shape.
std::vector<Ort::Value> run_encoder(const Engine::Sessions& s, const float* pixels, int batch, int64_t height,
                                    int64_t width, int64_t chunk_pixels) {
  const char* in_names[] = {"pixels"};
  const char* out_names[] = {"cross_k", "cross_v"};
  const size_t per_image = size_t(3) * height * width;
  auto run = [&](int start, int size) {
    std::vector<int64_t> shape = {size, 3, height, width};
    Ort::Value input = Ort::Value::CreateTensor<float>(s.cpu, const_cast<float*>(pixels) + size_t(start) * per_image,
                                                       size_t(size) * per_image, shape.data(), shape.size());
    return s.encoder->Run(Ort::RunOptions{nullptr}, in_names, &input, 1, out_names, 2);
  };
  const auto chunks = encoder_chunks(batch, height, width, chunk_pixels);
  if (chunks.size() == 1) return run(0, batch);
  std::vector<Ort::Value> whole;
  Ort::AllocatorWithDefaultOptions allocator;
  for (const auto& [start, size] : chunks) {
    auto part = run(start, size);
    for (size_t k = 0; k < part.size(); ++k) {
      auto info = part[k].GetTensorTypeAndShapeInfo();
      if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
        throw Error(PVLM_ERR_INTERNAL, std::string(out_names[k]) + " is not float32");
      std::vector<int64_t> shape = info.GetShape();  // (L, size, H, N, Dh)
      if (whole.size() == k) {
        shape[1] = batch;
        whole.push_back(Ort::Value::CreateTensor<float>(allocator, shape.data(), shape.size()));
        shape[1] = size;
      }
      size_t inner = 1;
      for (size_t d = 2; d < shape.size(); ++d) inner *= size_t(shape[d]);
      const float* src = part[k].GetTensorData<float>();
      float* dst = whole[k].GetTensorMutableData<float>();
      for (int64_t l = 0; l < shape[0]; ++l)
        std::memcpy(dst + (size_t(l) * batch + start) * inner, src + size_t(l) * size * inner, size * inner * sizeof(float));
    }
  }
  return whole;
}

// One batch in flight on decoder_ort: every buffer bound once (IO binding); a step moves the token ids in and
// the next ids out, the attention kernel appends this token's K/V to the shared past/present buffer in place.
class BoundRun {
 public:
  BoundRun(const Engine::Sessions& s, std::vector<Ort::Value>& encoded, int batch, int capacity) : s_(s) {
    const char* in_names[] = {"cross_k", "cross_v"};
    std::vector<const char*> out_names;
    for (const auto& n : s.cross_names) out_names.push_back(n.c_str());
    auto tables = s.cross->Run(Ort::RunOptions{nullptr}, in_names, encoded.data(), 2, out_names.data(), out_names.size());
    encoded.clear();  // the cross K/V are not needed once the tables exist
    for (auto& v : tables) cross_.push_back(from_value(std::move(v), 0));
    const int64_t b = batch, cap = capacity;
    for (int i = 0; i < 2 * s.layers; ++i)
      cache_.push_back(zeros<float>({b, s.heads, cap, s.head_dim}, 0, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT));
    indirection_ = zeros<int32_t>({b, 1, cap}, 0, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32);  // greedy: beam width 1
    tokens_ = zeros<int64_t>({b, 1}, 0, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64);
    positions_ = zeros<int64_t>({b, 1}, 0, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64);
    next_ids_ = zeros<int64_t>({b}, 0, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64);
    logits_ = zeros<float>({b, s.vocab}, 0, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    capacity_ = capacity;
    bind();
  }

  void step(const std::vector<int64_t>& tokens, int position, std::vector<int64_t>& next) {
    if (position >= capacity_) throw Error(PVLM_ERR_INTERNAL, "position past the cache capacity");
    auto* t = static_cast<int64_t*>(tokens_.data);
    auto* p = static_cast<int64_t*>(positions_.data);
    for (size_t i = 0; i < tokens.size(); ++i) t[i] = tokens[i], p[i] = position;
    s_.step->Run(Ort::RunOptions{nullptr}, *binding_);
    const auto* ids = static_cast<const int64_t*>(next_ids_.data);
    next.assign(ids, ids + tokens.size());
  }

  void keep(const std::vector<int>& rows) {
    for (auto* group : {&cross_, &cache_})
      for (auto& t : *group) t.keep(rows);
    for (auto* t : {&indirection_, &tokens_, &positions_, &next_ids_, &logits_}) t->keep(rows);
    bind();
  }

 private:
  void bind() {
    binding_ = std::make_unique<Ort::IoBinding>(*s_.step);
    const OrtMemoryInfo* mem = s_.cpu;
    for (size_t i = 0; i < cross_.size(); ++i) binding_->BindInput(s_.cross_names[i].c_str(), cross_[i].view(mem));
    for (int i = 0; i < s_.layers; ++i)
      for (int j = 0; j < 2; ++j) {
        const Tensor& buf = cache_[2 * i + j];
        std::string kv = j == 0 ? "k_" : "v_";
        binding_->BindInput(("past_" + kv + std::to_string(i)).c_str(), buf.view(mem));
        binding_->BindOutput(("present_" + kv + std::to_string(i)).c_str(), buf.view(mem));  // same buffer
      }
    binding_->BindInput("cache_indirection", indirection_.view(mem));
    binding_->BindInput("tokens", tokens_.view(mem));
    binding_->BindInput("positions", positions_.view(mem));
    binding_->BindOutput("logits", logits_.view(mem));
    binding_->BindOutput("next_ids", next_ids_.view(mem));
  }

  const Engine::Sessions& s_;
  std::vector<Tensor> cross_, cache_;
  Tensor indirection_, tokens_, positions_, next_ids_, logits_;
  std::unique_ptr<Ort::IoBinding> binding_;
  int capacity_ = 0;
};

// One batch in flight on the portable decoder.onnx: the cache in host buffers (L, B, H, capacity, Dh),
// this step's K/V written into slot `position`.
class PortableRun {
 public:
  PortableRun(const Engine::Sessions& s, std::vector<Ort::Value>& encoded, int batch, int capacity) : s_(s) {
    cross_k_ = from_value(std::move(encoded[0]), 1);
    cross_v_ = from_value(std::move(encoded[1]), 1);
    const int64_t b = batch, cap = capacity;
    cache_k_ = zeros<float>({s.layers, b, s.heads, cap, s.head_dim}, 1, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    cache_v_ = zeros<float>({s.layers, b, s.heads, cap, s.head_dim}, 1, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    tokens_ = zeros<int64_t>({b, 1}, 0, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64);
    positions_ = zeros<int64_t>({b, 1}, 0, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64);
  }

  void step(const std::vector<int64_t>& tokens, int position, std::vector<int64_t>& next) {
    const int64_t cap = cache_k_.shape[3];
    if (position >= cap) throw Error(PVLM_ERR_INTERNAL, "position past the cache capacity");
    auto* t = static_cast<int64_t*>(tokens_.data);
    auto* p = static_cast<int64_t*>(positions_.data);
    for (size_t i = 0; i < tokens.size(); ++i) t[i] = tokens[i], p[i] = position;
    const OrtMemoryInfo* mem = s_.cpu;
    const char* in_names[] = {"tokens", "positions", "cross_k", "cross_v", "cache_k", "cache_v"};
    Ort::Value inputs[] = {tokens_.view(mem),  positions_.view(mem), cross_k_.view(mem),
                           cross_v_.view(mem), cache_k_.view(mem),   cache_v_.view(mem)};
    const char* out_names[] = {"next_ids", "new_k", "new_v"};  // logits stay inside the decoder
    auto out = s_.step->Run(Ort::RunOptions{nullptr}, in_names, inputs, 6, out_names, 3);
    const size_t rows = size_t(s_.layers) * tokens.size() * s_.heads, dh = size_t(s_.head_dim);
    for (int kv = 0; kv < 2; ++kv) {
      const float* src = out[1 + kv].GetTensorData<float>();  // (L, B, H, 1, Dh)
      auto* dst = static_cast<float*>((kv ? cache_v_ : cache_k_).data);
      for (size_t r = 0; r < rows; ++r) std::memcpy(dst + (r * cap + position) * dh, src + r * dh, dh * sizeof(float));
    }
    const int64_t* ids = out[0].GetTensorData<int64_t>();
    next.assign(ids, ids + tokens.size());
  }

  void keep(const std::vector<int>& rows) {
    for (auto* t : {&cross_k_, &cross_v_, &cache_k_, &cache_v_, &tokens_, &positions_}) t->keep(rows);
  }

 private:
  const Engine::Sessions& s_;
  Tensor cross_k_, cross_v_, cache_k_, cache_v_, tokens_, positions_;
};

// True when id would complete an n-gram that seq already holds (runtime.decoding.banned_tokens).
bool repeats_ngram(const std::vector<int32_t>& seq, int n, int64_t id) {
  if (n <= 0 || seq.size() + 1 < size_t(n)) return false;
  const size_t k = size_t(n) - 1, len = seq.size();  // the n-gram's first n-1 tokens are seq's last k
  for (size_t i = 0; i + k < len; ++i)
    if (seq[i + k] == id && std::equal(seq.begin() + i, seq.begin() + i + k, seq.end() - k)) return true;
  return false;
}

template <class Run>
void greedy(Run& run, int batch, int64_t bos, int64_t eos, int max_new_tokens, bool stop_at_eos, int no_repeat,
            Generated& out) {
  std::vector<int> rows(batch);  // original row of each active row
  for (int i = 0; i < batch; ++i) rows[i] = i;
  std::vector<int64_t> tokens(batch, bos), ids;
  for (int pos = 0; pos < max_new_tokens; ++pos) {
    run.step(tokens, pos, ids);
    ++out.steps;
    std::vector<int> alive;
    for (size_t i = 0; i < ids.size(); ++i) {
      if ((stop_at_eos && ids[i] == eos) || repeats_ngram(out.tokens[rows[i]], no_repeat, ids[i])) {
        out.ended[rows[i]] = 1;
      } else {
        out.tokens[rows[i]].push_back(int32_t(ids[i]));
        alive.push_back(int(i));
      }
    }
    if (alive.empty()) break;
    if (alive.size() < ids.size()) {
      run.keep(alive);
      std::vector<int> kept_rows;
      std::vector<int64_t> kept_ids;
      for (int i : alive) kept_rows.push_back(rows[i]), kept_ids.push_back(ids[i]);
      rows.swap(kept_rows);
      ids.swap(kept_ids);
    }
    tokens = ids;
  }
}

}  // namespace

std::string Engine::onnxruntime_version() { return OrtGetApiBase()->GetVersionString(); }

Engine::Engine(const fs::path& bundle_dir, const EngineOptions& options)
    : bundle_(Bundle::load(bundle_dir, options.verify)), options_(options) {
  const Manifest& m = bundle_.manifest;
  bos_ = m.special.at("bos");
  eos_ = m.special.at("eos");
  if (options.threads < 0) throw Error(PVLM_ERR_ARGUMENT, "threads must be >= 0, got " + std::to_string(options.threads));
  // choose_decoder (runtime/backends/ort.py)
  const std::string& d = options.decoder;
  if (d != "auto" && d != "ort" && d != "portable")
    throw Error(PVLM_ERR_ARGUMENT, "decoder must be one of auto, ort, portable, got '" + d + "'");
  auto variant = bundle_.variant_graphs(options.precision);
  bool has_ort_graphs = bundle_.has_graph("decoder_ort") && bundle_.has_graph("cross_ort");
  std::string root = bundle_.root.string();
  if (variant.count("decoder") && !variant.count("decoder_ort")) {
    if (d == "ort") throw Error(PVLM_ERR_UNSUPPORTED, root + ": the bundle's " + options.precision + " graphs have no decoder_ort");
    decoder_graph_ = "decoder";
  } else if (d == "portable") {
    decoder_graph_ = "decoder";
  } else if (!has_ort_graphs) {
    if (d == "ort") throw Error(PVLM_ERR_UNSUPPORTED, root + ": the bundle has no cross_ort + decoder_ort graphs; re-export it");
    decoder_graph_ = "decoder";
  } else if (!version_at_least(onnxruntime_version(), kMinBoundMajor, kMinBoundMinor)) {
    if (d == "ort")
      throw Error(PVLM_ERR_UNSUPPORTED, "decoder_ort needs ONNX Runtime >= 1.31 (this is " + onnxruntime_version() + ")");
    decoder_graph_ = "decoder";
  } else {
    decoder_graph_ = "decoder_ort";
  }
  Ort::Env& env = process_env(options.shared_threads, options.threads, &shared_threads_);
  shared_threads_ = shared_threads_ && options.shared_threads;
  sessions_ = std::make_unique<Sessions>();  // after process_env: it makes the API table usable
  Sessions& s = *sessions_;
  s.bound = decoder_graph_ == "decoder_ort";
  s.layers = m.model.n_layers;  // consistent with every graph's shapes: checked by Manifest::check_consistency
  s.heads = m.model.n_heads;
  s.head_dim = m.model.head_dim();
  s.vocab = m.model.vocab_size;
  // SessionLoader._options: per-step sessions may spin; with their own pools the once-per-batch graphs
  // must not spin on the cores the decoder steps need next.
  auto session_options = [&](bool spin) {
    Ort::SessionOptions so;
    so.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    so.SetLogSeverityLevel(3);
    if (shared_threads_) {
      so.DisablePerSessionThreads();
    } else if (options.threads > 0) {
      so.SetIntraOpNumThreads(options.threads);
      so.SetInterOpNumThreads(1);
    }
    if (!spin) so.AddConfigEntry("session.intra_op.allow_spinning", "0");
    return so;
  };
  auto load = [&](const std::string& graph, bool per_step) {
    fs::path path = bundle_.path(graph, options.precision);
    std::unique_ptr<Ort::Session> session;
    try {
      session = std::make_unique<Ort::Session>(env, path.c_str(), session_options(per_step || shared_threads_));
    } catch (const Ort::Exception& e) {
      throw Error(PVLM_ERR_RUNTIME, path.string() + ": ONNX Runtime cannot load this graph (" + first_line(e.what()) + ")");
    }
    check_graph_io(*session, bundle_.graph(graph), path);
    return session;
  };
  try {
    s.step = load(decoder_graph_, true);
    s.encoder = load("encoder", false);
    if (s.bound) s.cross = load("cross_ort", false);
  } catch (const Ort::Exception& e) {
    throw Error(PVLM_ERR_RUNTIME, std::string("ONNX Runtime: ") + first_line(e.what()));
  }
  // What the loop feeds and reads (pixels, cross tables, caches, next_ids...) is the graph contract that
  // Manifest::check_consistency checked, and each loaded graph declares what its manifest entry says.
  if (s.bound)
    for (const auto& [name, t] : bundle_.graph("cross_ort").outputs) s.cross_names.push_back(name);
}

Engine::~Engine() = default;

Generated Engine::generate(const float* pixels, int batch, int max_new_tokens, bool stop_at_eos,
                           int no_repeat_ngram_size) const {
  const Sessions& s = *sessions_;
  const Preprocess& pre = bundle_.manifest.preprocess;
  Generated out;
  out.tokens.resize(batch);
  out.ended.assign(batch, 0);
  const char* graph = "encoder";
  try {
    auto t0 = Clock::now();
    auto encoded = run_encoder(s, pixels, batch, pre.height, pre.width, options_.encoder_chunk_pixels);
    graph = s.bound ? "cross_ort" : "decoder";
    if (s.bound) {
      BoundRun run(s, encoded, batch, max_new_tokens);
      out.encode_ms = ms_since(t0);
      auto t1 = Clock::now();
      graph = "decoder_ort";
      greedy(run, batch, bos_, eos_, max_new_tokens, stop_at_eos, no_repeat_ngram_size, out);
      out.decode_ms = ms_since(t1);
    } else {
      PortableRun run(s, encoded, batch, max_new_tokens);
      out.encode_ms = ms_since(t0);
      auto t1 = Clock::now();
      greedy(run, batch, bos_, eos_, max_new_tokens, stop_at_eos, no_repeat_ngram_size, out);
      out.decode_ms = ms_since(t1);
    }
  } catch (const Ort::Exception& e) {
    throw Error(PVLM_ERR_RUNTIME, std::string("ONNX Runtime failed running ") + graph + ": " + first_line(e.what()));
  }
  return out;
}

std::string Engine::detokenize(const std::vector<int32_t>& ids) const {
  static const std::set<std::string> kNoSpaceBefore = {",", ".", ";", ":", "!", "?", ")", "'"};
  constexpr int kSpecial = 4;  // pad, bos, eos, unk
  static const std::string kUnknown = "<unk>";
  const auto& itos = bundle_.manifest.tokens;
  std::vector<std::string> words;
  for (int32_t i : ids) {
    if (i < kSpecial) continue;
    const std::string& tok = size_t(i) < itos.size() ? itos[size_t(i)] : kUnknown;
    if (!words.empty() && kNoSpaceBefore.count(tok))
      words.back() += tok;
    else
      words.push_back(tok);
  }
  std::string text;
  for (size_t i = 0; i < words.size(); ++i) text += (i ? " " : "") + words[i];
  return text;
}

}  // namespace pvlm_core
