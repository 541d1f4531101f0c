// Code point trees (constrain/regex_ast.h) of JSON-shaped outputs, shared by the grammar tests and
// bench/constrain_bench (which compiles json_trees.cpp into itself: it needs no gtest).
#pragma once

#include "constrain/regex_ast.h"

namespace lp::test {

// A JSON-ish object: {"name": "<string>", "age": <integer>, "tags": [<string>, ...]} with up to two spaces
// around each token; strings allow the escapes \" \\ \n.
constrain::NodePtr json_object_tree();

}  // namespace lp::test
