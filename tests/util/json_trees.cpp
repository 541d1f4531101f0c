#include "util/json_trees.h"

#include <string>

namespace lp::test {

using namespace lp::constrain;

NodePtr json_object_tree() {
  NodePtr ws = repeat(text(" "), 0, 2);
  NodePtr chr = alt({set({{0x20, 0x21}, {0x23, 0x5B}, {0x5D, 0x10FFFF}}),
                     concat({text("\\"), set({{'"', '"'}, {'\\', '\\'}, {'n', 'n'}})})});
  NodePtr str = concat({text("\""), repeat(chr, 0, -1), text("\"")});
  NodePtr integer = concat(
      {optional(text("-")), alt({text("0"), concat({set({{'1', '9'}}), repeat(set({{'0', '9'}}), 0, 15)})})});
  NodePtr arr = concat({text("["), ws, repeat(str, 0, -1, concat({ws, text(","), ws})), ws, text("]")});
  auto field = [&](const char* name, NodePtr v) {
    return concat({text(std::string("\"") + name + "\""), ws, text(":"), ws, v});
  };
  return concat({text("{"), ws, field("name", str), ws, text(","), ws, field("age", integer), ws, text(","),
                 ws, field("tags", arr), ws, text("}")});
}

}  // namespace lp::test
