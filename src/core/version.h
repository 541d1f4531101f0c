// loraplex's version, as set by project(... VERSION) in the top CMakeLists: what `loraplex --version`
// prints and GET /version answers.
#pragma once

#include <string_view>

namespace lp {

std::string_view version();  // "0.1.0"

}  // namespace lp
