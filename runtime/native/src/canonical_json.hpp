// RFC 8785 (JCS) canonical JSON, as runtime/bundle.py's canonical_json writes it for the manifest's
// content hash: keys sorted by UTF-16 code units, no whitespace, numbers as ECMAScript prints them.
#pragma once

#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace pvlm_core {

// Throws std::invalid_argument for what JCS cannot represent exactly (a non-finite number, an integer beyond
// 2**53, nesting deeper than max_depth).
std::string canonical_json(const nlohmann::ordered_json& value, int max_depth = 32);

// ECMAScript Number::toString of a finite double ("1", "0.00001", "1e+21").
std::string es_number(double x);

}  // namespace pvlm_core
