#include "bundle.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <set>
#include <utility>

#include "error.hpp"
#include "files.hpp"
#include "onnx_io.hpp"
#include "sha256.hpp"

namespace pvlm_core {
namespace fs = std::filesystem;

fs::path inside(const fs::path& root, const std::string& name) {
  std::error_code ec;
  fs::path base = fs::weakly_canonical(fs::absolute(root), ec);
  fs::path target;
  if (!ec) target = fs::weakly_canonical(fs::absolute(root / name), ec);
  if (ec)
    throw Error(PVLM_ERR_OUTSIDE_BUNDLE, root.string() + ": manifest entry '" + name + "' cannot be resolved (" +
                                             ec.message() + "); refusing it");
  bool ok = target != base;
  if (ok) {
    auto b = base.begin(), t = target.begin();
    for (; b != base.end() && t != target.end() && *b == *t; ++b, ++t) {
    }
    ok = b == base.end() || (b->empty() && std::next(b) == base.end());  // base "/x/" ends in an empty part
  }
  if (!ok)
    throw Error(PVLM_ERR_OUTSIDE_BUNDLE, root.string() + ": manifest entry '" + name +
                                             "' resolves outside the bundle (" + target.string() + "); refusing it");
  return target;
}

namespace {

using Check = std::function<void(const Bundle&)>;

// Every named file stays inside the bundle and is a regular file or a folder, or is absent (a FIFO would
// hang a reader).
void check_files(const Bundle& b) {
  for (const auto& name : b.manifest.files) {
    fs::path p = inside(b.root, name);
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) {
      if (errno == ENOENT) continue;
      throw Error(PVLM_ERR_INTEGRITY, p.string() + ": unreadable (" + std::strerror(errno) + ")");
    }
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
      throw Error(PVLM_ERR_INTEGRITY, p.string() + ": " + file_kind(st.st_mode) + ", not a regular file; refusing it");
  }
}

// The manifest's content hash (its sections and graph entries as export sealed them).
void check_content_hash(const Bundle& b) {
  try {
    b.manifest.check_content_hash();
  } catch (const Error& e) {
    throw Error(e.code(), (b.root / "manifest.json").string() + ": " + e.what());
  }
}

// Each artefact exists and hashes to the manifest's sha256.
void check_artifacts(const Bundle& b) {
  const json& artifacts = b.manifest.raw["artifacts"];
  for (auto it = artifacts.begin(); it != artifacts.end(); ++it) {  // manifest order, as Python iterates
    const std::string& name = it.key();
    fs::path p = inside(b.root, name);
    std::string shown = (b.root / name).string();
    std::error_code ec;
    if (!fs::exists(p, ec)) throw Error(PVLM_ERR_INTEGRITY, shown + ": missing from the bundle");
    if (fs::is_directory(p, ec))  // a package (.mlpackage): nothing inside it may point out of the bundle either
      for (const auto& e : fs::recursive_directory_iterator(p, ec))
        inside(b.root, name + "/" + fs::relative(e.path(), p).generic_string());
    std::string actual;
    try {
      actual = sha256_path(p);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Error(PVLM_ERR_INTEGRITY, shown + ": unreadable (" + e.what() + ")");
    }
    if (actual != b.manifest.artifacts.at(name))
      throw Error(PVLM_ERR_INTEGRITY, shown + ": sha256 does not match the manifest (file modified or corrupt)");
  }
}

std::string python_list(const std::vector<std::string>& dims, const std::vector<bool>& fixed) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + (fixed[i] ? dims[i] : "'" + dims[i] + "'");
  return s + "]";
}

// Every ONNX graph (variants included) declares the manifest entry's inputs and outputs: names in order,
// element types, ranks, fixed sizes (a dimension name in the manifest: any dynamic dimension).
void check_graph_files(const Bundle& b) {
  std::set<std::pair<std::string, std::string>> files;
  for (const auto& [name, g] : b.manifest.graphs) files.insert({name, g.file});
  for (const auto& [precision, graphs] : b.manifest.variants)
    for (const auto& [name, file] : graphs) files.insert({name, file});
  for (const auto& [name, file] : files) {
    fs::path path = inside(b.root, file);
    GraphIo io = onnx_graph_io(path);
    const GraphEntry& entry = b.manifest.graphs.at(name);
    for (int side = 0; side < 2; ++side) {
      const Tensors& declared = side ? entry.outputs : entry.inputs;
      const std::vector<GraphValue>& actual = side ? io.outputs : io.inputs;
      const char* side_name = side ? "outputs" : "inputs";
      bool same_names = declared.size() == actual.size();
      for (size_t i = 0; same_names && i < actual.size(); ++i) same_names = actual[i].name == declared[i].first;
      if (!same_names) {
        std::string names;
        for (size_t i = 0; i < std::min<size_t>(6, actual.size()); ++i) names += (i ? ", " : "") + actual[i].name;
        if (actual.size() > 6) names += "...";
        throw Error(PVLM_ERR_INTEGRITY, path.string() + ": the graph's " + side_name + " are [" + names +
                                            "], not graphs." + name + "." + side_name + " of the manifest");
      }
      for (size_t i = 0; i < actual.size(); ++i) {
        const GraphValue& g = actual[i];
        const TensorEntry& t = declared[i].second;
        bool same = g.dtype == t.dtype && g.has_shape && g.dims.size() == t.dims.size();
        for (size_t d = 0; same && d < g.dims.size(); ++d)
          same = t.dims[d] < 0 ? !g.fixed[d] : (g.fixed[d] && std::to_string(t.dims[d]) == g.dims[d]);
        if (!same) {
          std::vector<std::string> want;
          std::vector<bool> want_fixed;
          for (size_t d = 0; d < t.dims.size(); ++d) {
            want.push_back(t.dims[d] >= 0 ? std::to_string(t.dims[d]) : t.dim_names[d]);
            want_fixed.push_back(t.dims[d] >= 0);
          }
          throw Error(PVLM_ERR_INTEGRITY, path.string() + ": " + g.name + " is " + g.dtype + " " +
                                              (g.has_shape ? python_list(g.dims, g.fixed) : "?") + " in the graph, but graphs." +
                                              name + "." + side_name + "." + g.name + " is " + t.dtype + " " +
                                              python_list(want, want_fixed));
        }
      }
    }
  }
}

// After the manifest is parsed and consistent, in order.
const Check kLoadChecks[] = {check_files};
// With verify: the content hash first, the graphs' declared inputs and outputs last (as Bundle.verify).
const Check kVerifyChecks[] = {check_content_hash, check_artifacts, check_graph_files};

}  // namespace

Bundle Bundle::load(const fs::path& root, bool verify) {
  std::error_code ec;
  fs::path path = root / "manifest.json";
  if (!fs::is_directory(root, ec)) throw Error(PVLM_ERR_BUNDLE_MISSING, root.string() + ": bundle directory does not exist");
  if (!fs::exists(fs::symlink_status(path, ec)))
    throw Error(PVLM_ERR_BUNDLE_MISSING, root.string() + ": not an export bundle (no manifest.json)");
  inside(root, "manifest.json");  // a symlinked manifest counts too, before anything is read
  std::string text = read_regular(path, kMaxManifestBytes, PVLM_ERR_MANIFEST);
  Bundle b;
  b.root = root;
  Sha256 h;
  h.update(text);
  b.manifest_sha256 = h.hex();
  json data;
  try {
    data = parse_manifest_json(text);
  } catch (const std::invalid_argument& e) {
    std::string what = e.what();
    throw Error(PVLM_ERR_MANIFEST, path.string() + ": corrupt manifest (" + what.substr(0, 120) + ")");
  }
  try {
    b.manifest = Manifest::parse(data);
    b.manifest.check_consistency();
  } catch (const Error& e) {
    throw Error(e.code(), path.string() + ": " + e.what());
  }
  for (const auto& check : kLoadChecks) check(b);
  if (verify)
    for (const auto& check : kVerifyChecks) check(b);
  return b;
}

std::vector<std::string> Bundle::precisions() const {
  std::vector<std::string> out = {"fp32"};
  auto variants = manifest.raw.find("variants");
  if (variants != manifest.raw.end())
    for (auto it = variants->begin(); it != variants->end(); ++it) out.push_back(it.key());
  return out;
}

std::map<std::string, std::string> Bundle::variant_graphs(const std::string& precision) const {
  if (precision == "fp32") return {};
  auto it = manifest.variants.find(precision);
  if (it == manifest.variants.end()) {
    std::string held;
    for (const auto& p : precisions()) held += (held.empty() ? "" : ", ") + p;
    throw Error(PVLM_ERR_UNSUPPORTED, root.string() + ": the bundle has no " + precision + " graphs (it holds " + held +
                                          "); re-export it with pvlm-export onnx --" + precision);
  }
  return it->second;
}

const GraphEntry& Bundle::graph(const std::string& name) const {
  auto it = manifest.graphs.find(name);
  if (it == manifest.graphs.end())
    throw Error(PVLM_ERR_UNSUPPORTED, root.string() + ": the manifest has no '" + name + "' graph");
  return it->second;
}

fs::path Bundle::path(const std::string& name, const std::string& precision) const {
  const GraphEntry& g = graph(name);
  auto variant = variant_graphs(precision);
  auto it = variant.find(name);
  return root / (it == variant.end() ? g.file : it->second);
}

}  // namespace pvlm_core
