#include "canonical_json.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <utility>
#include <vector>

namespace pvlm_core {
namespace {

using json = nlohmann::ordered_json;

// UTF-8 -> UTF-16 code units (the strings are valid UTF-8: the JSON parser checked them).
std::u16string utf16(const std::string& s) {
  std::u16string out;
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    uint32_t cp;
    int len;
    if (c < 0x80) cp = c, len = 1;
    else if (c < 0xE0) cp = c & 0x1F, len = 2;
    else if (c < 0xF0) cp = c & 0x0F, len = 3;
    else cp = c & 0x07, len = 4;
    for (int k = 1; k < len && i + k < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    i += size_t(len);
    if (cp >= 0x10000) {
      cp -= 0x10000;
      out += char16_t(0xD800 + (cp >> 10));
      out += char16_t(0xDC00 + (cp & 0x3FF));
    } else {
      out += char16_t(cp);
    }
  }
  return out;
}

// A string as Python's json.dumps(ensure_ascii=False) writes it (the escapes JCS uses).
void string_to(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += char(c);
        }
    }
  }
  out += '"';
}

void write(std::string& out, const json& v, int depth, int max_depth) {
  if (depth > max_depth) throw std::invalid_argument("nested deeper than " + std::to_string(max_depth) + " levels");
  constexpr double kExact = 9007199254740992.0;  // 2**53
  switch (v.type()) {
    case json::value_t::null: out += "null"; return;
    case json::value_t::boolean: out += v.get<bool>() ? "true" : "false"; return;
    case json::value_t::number_integer: {
      int64_t i = v.get<int64_t>();
      if (i > int64_t(kExact) || i < -int64_t(kExact))
        throw std::invalid_argument("integer " + std::to_string(i) + " is beyond 2**53 (not exactly a JSON number everywhere)");
      out += std::to_string(i);
      return;
    }
    case json::value_t::number_unsigned: {
      uint64_t u = v.get<uint64_t>();
      if (u > uint64_t(kExact))
        throw std::invalid_argument("integer " + std::to_string(u) + " is beyond 2**53 (not exactly a JSON number everywhere)");
      out += std::to_string(u);
      return;
    }
    case json::value_t::number_float: out += es_number(v.get<double>()); return;
    case json::value_t::string: string_to(out, v.get_ref<const std::string&>()); return;
    case json::value_t::array: {
      out += '[';
      bool first = true;
      for (const auto& x : v) {
        if (!first) out += ',';
        first = false;
        write(out, x, depth + 1, max_depth);
      }
      out += ']';
      return;
    }
    case json::value_t::object: {
      std::vector<std::pair<std::u16string, json::const_iterator>> keys;
      for (auto it = v.begin(); it != v.end(); ++it) keys.emplace_back(utf16(it.key()), it);
      std::sort(keys.begin(), keys.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      out += '{';
      bool first = true;
      for (const auto& [k, it] : keys) {
        if (!first) out += ',';
        first = false;
        string_to(out, it.key());
        out += ':';
        write(out, it.value(), depth + 1, max_depth);
      }
      out += '}';
      return;
    }
    default: throw std::invalid_argument("binary values are not JSON");
  }
}

}  // namespace

std::string es_number(double x) {
  if (!std::isfinite(x)) throw std::invalid_argument("a number is not finite");
  if (x == 0) return "0";
  if (x < 0) return "-" + es_number(-x);
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);  // shortest round trip
  std::string sci(buf, res.ptr);  // d.ddde+XX
  size_t e = sci.find('e');
  std::string digits = sci.substr(0, 1) + (e > 2 ? sci.substr(2, e - 2) : "");
  int n = std::stoi(sci.substr(e + 1)) + 1;  // x = 0.digits * 10**n
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  const int k = int(digits.size());
  if (k <= n && n <= 21) return digits + std::string(size_t(n - k), '0');
  if (0 < n && n <= 21) return digits.substr(0, size_t(n)) + "." + digits.substr(size_t(n));
  if (-6 < n && n <= 0) return "0." + std::string(size_t(-n), '0') + digits;
  int exp = n - 1;
  std::string mantissa = k == 1 ? digits : digits.substr(0, 1) + "." + digits.substr(1);
  return mantissa + "e" + (exp >= 0 ? "+" : "-") + std::to_string(std::abs(exp));
}

std::string canonical_json(const json& value, int max_depth) {
  std::string out;
  write(out, value, 0, max_depth);
  return out;
}

}  // namespace pvlm_core
