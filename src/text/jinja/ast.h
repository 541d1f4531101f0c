// Syntax tree of a parsed Jinja template, mirroring @huggingface/jinja's ast.ts node types. One generic
// Node struct keeps the parser and interpreter short; the table below says which fields each kind uses.
//
//   kind          str           num  flag      a          b          c        list       body / alt
//   Text          text
//   StringLit     value
//   IntLit/Float                value
//   Identifier    name
//   ArrayLit/TupleLit                                                         items
//   ObjectLit                                                                            (pairs: key, value)
//   Member                                 computed  object     property
//   Call                                             callee                   args
//   Binary        operator                           left       right
//   Unary         operator                           argument
//   Filter                                           operand    filter (Identifier or Call)
//   Select                                           lhs        test
//   Test          test name         negate  operand
//   Slice                                            start?     stop?      step?
//   KwArg         key                                value
//   Spread/KwSpread                                  argument
//   Ternary                                          condition  if_true    if_false
//   If                                               test                             body / else
//   For                                              loopvar    iterable              body / else
//   Set                                              assignee   value?                body (block set)
//   Macro         name              uses_*                                params     body
//   CallBlock                                        call                  caller params  body
//   FilterBlock                                                 filter                body
//   Break/Continue/Comment
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace lp::text::jinja {

enum class NodeKind : uint8_t {
  kText,
  kStringLit,
  kIntLit,
  kFloatLit,
  kIdentifier,
  kArrayLit,
  kTupleLit,
  kObjectLit,
  kMember,
  kCall,
  kBinary,
  kUnary,
  kFilter,
  kSelect,
  kTest,
  kSlice,
  kKwArg,
  kSpread,
  kKwSpread,
  kTernary,
  kIf,
  kFor,
  kSet,
  kMacro,
  kCallBlock,
  kFilterBlock,
  kBreak,
  kContinue,
  kComment,
};
const char* node_kind_name(NodeKind k);  // @huggingface/jinja's type names ("MemberExpression", ...)

struct Node;
using NodePtr = std::unique_ptr<Node>;

struct Node {
  explicit Node(NodeKind k) : kind(k) {}

  NodeKind kind;
  int depth = 1;  // height of this subtree; the parser rejects trees deeper than its limit
  std::string str;
  double num = 0;
  bool flag = false;
  bool uses_kwargs = false;   // Macro / CallBlock: the body reads `kwargs` before declaring it
  bool uses_varargs = false;  // Macro / CallBlock: the body reads `varargs` before declaring it
  NodePtr a, b, c;
  std::vector<NodePtr> list;
  std::vector<std::pair<NodePtr, NodePtr>> pairs;
  std::vector<NodePtr> body, alt;
};

struct Program {
  std::vector<NodePtr> body;
};

// findAccessedSpecialMacroArguments: sets def->uses_kwargs / uses_varargs (Macro or CallBlock node) when its
// body reads `kwargs` / `varargs` before declaring them, following Jinja's visit order.
void find_special_macro_args(Node* def);

}  // namespace lp::text::jinja
