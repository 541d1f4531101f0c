#include "core/version.h"

#ifndef LP_VERSION
#error "LP_VERSION is set by src/core/CMakeLists.txt"
#endif

namespace lp {

std::string_view version() {
  return LP_VERSION;
}

}  // namespace lp
