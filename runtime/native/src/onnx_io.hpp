// The inputs and outputs an ONNX file declares, read from its protobuf without the onnx library (as
// runtime/bundle.py's onnx_graph_io): only the fields needed, the weights never read.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace pvlm_core {

struct GraphValue {
  std::string name;
  std::string dtype;  // numpy's name ("float32"), "not a tensor", or "elem_type N"
  bool has_shape = false;
  std::vector<std::string> dims;  // each a decimal size, a dimension name, or "?" (unnamed)
  std::vector<bool> fixed;        // true where dims[i] is a size
};

struct GraphIo {
  std::vector<GraphValue> inputs, outputs;
};

// Error(PVLM_ERR_INTEGRITY) for a file that is not a regular file or not an ONNX model.
GraphIo onnx_graph_io(const std::filesystem::path& path);

}  // namespace pvlm_core
