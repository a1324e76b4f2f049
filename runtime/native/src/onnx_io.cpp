#include "onnx_io.hpp"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <functional>
#include <map>

#include "error.hpp"
#include "files.hpp"

// ModelProto.graph = 7; GraphProto.input = 11, .output = 12; ValueInfoProto.name = 1, .type = 2;
// TypeProto.tensor_type = 1 (a oneof with 4, 5, 8, 9); Tensor.elem_type = 1, .shape = 2;
// TensorShapeProto.dim = 1; Dimension.dim_value = 1, .dim_param = 2 (onnx/onnx.proto3).

namespace pvlm_core {
namespace {

constexpr size_t kMaxGraphIo = 4096;  // inputs plus outputs of one graph (runtime/bundle.py MAX_GRAPH_IO)

struct Malformed {
  std::string why;
};

struct Span {
  size_t begin, end;
};

struct Field {
  uint32_t number, wire;
  uint64_t value;  // varint
  Span span;       // length-delimited
};

uint64_t varint(const uint8_t* buf, size_t& pos, size_t end) {
  uint64_t result = 0;
  int shift = 0;
  while (true) {
    if (pos >= end) throw Malformed{"truncated varint"};
    if (shift > 63) throw Malformed{"varint longer than 10 bytes"};
    uint8_t b = buf[pos++];
    result |= uint64_t(b & 0x7F) << shift;
    if (!(b & 0x80)) return result;
    shift += 7;
  }
}

// Each field of one message: its number, wire type, and varint value or span.
void fields(const uint8_t* buf, Span s, const std::function<void(const Field&)>& each) {
  size_t pos = s.begin;
  while (pos < s.end) {
    uint64_t key = varint(buf, pos, s.end);
    Field f{uint32_t(key >> 3), uint32_t(key & 7), 0, {0, 0}};
    if (f.number == 0) throw Malformed{"field number 0"};
    if (f.wire == 0) {
      f.value = varint(buf, pos, s.end);
    } else if (f.wire == 2) {
      uint64_t size = varint(buf, pos, s.end);
      if (size > s.end - pos) throw Malformed{"a field runs past its message"};
      f.span = {pos, pos + size_t(size)};
      pos += size_t(size);
    } else if (f.wire == 1 || f.wire == 5) {
      pos += f.wire == 1 ? 8 : 4;
      if (pos > s.end) throw Malformed{"a field runs past its message"};
      continue;
    } else {
      throw Malformed{"wire type " + std::to_string(f.wire)};
    }
    each(f);
  }
}

bool valid_utf8(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n;) {
    uint8_t c = p[i];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > n) return false;
    uint32_t cp = len == 1 ? c : c & (0x7F >> len);
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

std::string text(const uint8_t* buf, Span s) {
  if (!valid_utf8(buf + s.begin, s.end - s.begin)) throw Malformed{"a name is not UTF-8"};
  return std::string(reinterpret_cast<const char*>(buf + s.begin), s.end - s.begin);
}

std::string dtype_of(uint64_t elem) {
  static const std::map<uint64_t, const char*> kTypes = {
      {1, "float32"}, {2, "uint8"},   {3, "int8"},    {4, "uint16"},  {5, "int16"},   {6, "int32"},   {7, "int64"},
      {8, "string"},  {9, "bool"},    {10, "float16"}, {11, "float64"}, {12, "uint32"}, {13, "uint64"}, {16, "bfloat16"}};
  auto it = kTypes.find(elem);
  return it != kTypes.end() ? it->second : "elem_type " + std::to_string(elem);
}

GraphValue value_info(const uint8_t* buf, Span s) {
  GraphValue v;
  std::string kind;  // "", "tensor", "other"
  uint64_t elem = 0;
  fields(buf, s, [&](const Field& f) {
    if (f.number == 1 && f.wire == 2) {
      v.name = text(buf, f.span);
    } else if (f.number == 2 && f.wire == 2) {
      fields(buf, f.span, [&](const Field& t) {
        if (t.wire != 2) return;
        if (t.number == 1) {
          if (kind != "tensor") kind = "tensor", elem = 0, v.has_shape = false, v.dims.clear(), v.fixed.clear();
          fields(buf, t.span, [&](const Field& g) {
            if (g.number == 1 && g.wire == 0) {
              elem = g.value;
            } else if (g.number == 2 && g.wire == 2) {
              v.has_shape = true;
              fields(buf, g.span, [&](const Field& d) {
                if (d.number != 1 || d.wire != 2) return;
                if (v.dims.size() >= 64) throw Malformed{"more than 64 dimensions"};
                std::string dim = "?";
                bool fixed = false;
                fields(buf, d.span, [&](const Field& x) {
                  if (x.number == 1 && x.wire == 0) {
                    dim = std::to_string(int64_t(x.value)), fixed = true;
                  } else if (x.number == 2 && x.wire == 2) {
                    dim = text(buf, x.span), fixed = false;
                    if (dim.empty()) dim = "?";
                  }
                });
                v.dims.push_back(dim);
                v.fixed.push_back(fixed);
              });
            }
          });
        } else if (t.number == 4 || t.number == 5 || t.number == 8 || t.number == 9) {
          kind = "other", elem = 0, v.has_shape = false, v.dims.clear(), v.fixed.clear();
        }
      });
    }
  });
  v.dtype = kind == "tensor" ? dtype_of(elem) : "not a tensor";
  return v;
}

}  // namespace

GraphIo onnx_graph_io(const std::filesystem::path& path) {
  int fd = open_regular(path, PVLM_ERR_INTEGRITY);
  struct stat st {};
  ::fstat(fd, &st);
  size_t size = size_t(st.st_size);
  if (size == 0) {
    ::close(fd);
    throw Error(PVLM_ERR_INTEGRITY, path.string() + ": empty file, not an ONNX model");
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) throw Error(PVLM_ERR_INTEGRITY, path.string() + ": unreadable (mmap failed)");
  const auto* buf = static_cast<const uint8_t*>(map);
  GraphIo io;
  try {
    fields(buf, {0, size}, [&](const Field& f) {
      if (f.number != 7 || f.wire != 2) return;
      fields(buf, f.span, [&](const Field& g) {
        if (g.wire != 2 || (g.number != 11 && g.number != 12)) return;
        if (io.inputs.size() + io.outputs.size() >= kMaxGraphIo)
          throw Malformed{"more than " + std::to_string(kMaxGraphIo) + " inputs and outputs"};
        (g.number == 11 ? io.inputs : io.outputs).push_back(value_info(buf, g.span));
      });
    });
  } catch (const Malformed& e) {
    ::munmap(map, size);
    throw Error(PVLM_ERR_INTEGRITY, path.string() + ": not a readable ONNX model (" + e.why + ")");
  } catch (...) {
    ::munmap(map, size);
    throw;
  }
  ::munmap(map, size);
  return io;
}

}  // namespace pvlm_core
