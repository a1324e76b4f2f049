// The one exception type inside the library; the C ABI turns it into a status code and a message.
#pragma once

#include <stdexcept>
#include <string>

#include "pvlm.h"

namespace pvlm_core {

class Error : public std::runtime_error {
 public:
  Error(pvlm_status code, const std::string& message) : std::runtime_error(message), code_(code) {}
  pvlm_status code() const { return code_; }

 private:
  pvlm_status code_;
};

}  // namespace pvlm_core
