// Syntax tree helpers: node type names and the macro special-argument analysis (see ast.h).
#include "text/jinja/ast.h"

namespace lp::text::jinja {

const char* node_kind_name(NodeKind k) {
  switch (k) {
    case NodeKind::kText:
      return "Text";
    case NodeKind::kStringLit:
      return "StringLiteral";
    case NodeKind::kIntLit:
      return "IntegerLiteral";
    case NodeKind::kFloatLit:
      return "FloatLiteral";
    case NodeKind::kIdentifier:
      return "Identifier";
    case NodeKind::kArrayLit:
      return "ArrayLiteral";
    case NodeKind::kTupleLit:
      return "TupleLiteral";
    case NodeKind::kObjectLit:
      return "ObjectLiteral";
    case NodeKind::kMember:
      return "MemberExpression";
    case NodeKind::kCall:
      return "CallExpression";
    case NodeKind::kBinary:
      return "BinaryExpression";
    case NodeKind::kUnary:
      return "UnaryExpression";
    case NodeKind::kFilter:
      return "FilterExpression";
    case NodeKind::kSelect:
      return "SelectExpression";
    case NodeKind::kTest:
      return "TestExpression";
    case NodeKind::kSlice:
      return "SliceExpression";
    case NodeKind::kKwArg:
      return "KeywordArgumentExpression";
    case NodeKind::kSpread:
      return "SpreadExpression";
    case NodeKind::kKwSpread:
      return "KeywordSpreadExpression";
    case NodeKind::kTernary:
      return "Ternary";
    case NodeKind::kIf:
      return "If";
    case NodeKind::kFor:
      return "For";
    case NodeKind::kSet:
      return "Set";
    case NodeKind::kMacro:
      return "Macro";
    case NodeKind::kCallBlock:
      return "CallStatement";
    case NodeKind::kFilterBlock:
      return "FilterStatement";
    case NodeKind::kBreak:
      return "Break";
    case NodeKind::kContinue:
      return "Continue";
    case NodeKind::kComment:
      return "Comment";
  }
  return "?";
}

namespace {

// findAccessedSpecialMacroArguments: does the body load `kwargs` / `varargs` before declaring them,
// following Jinja's visit order.
class SpecialArgFinder {
 public:
  void declare_params(const std::vector<NodePtr>& params) {
    for (const auto& p : params) declare(param_name(*p));
  }
  void visit_all(const std::vector<NodePtr>& nodes) {
    for (const auto& n : nodes) visit(n.get());
  }
  bool kwargs = false, varargs = false;

 private:
  static const std::string& param_name(const Node& p) { return p.str; }  // Identifier or KwArg key
  void declare(const std::string& name) {
    if (name == "kwargs") declared_kwargs_ = true;
    if (name == "varargs") declared_varargs_ = true;
  }
  void declare_target(const Node* t) {
    if (!t) return;
    if (t->kind == NodeKind::kIdentifier) declare(t->str);
    if (t->kind == NodeKind::kTupleLit) {
      for (const auto& x : t->list) declare_target(x.get());
    }
  }
  void visit_defaults(const std::vector<NodePtr>& params) {
    for (const auto& p : params) {
      if (p->kind == NodeKind::kKwArg) visit(p->a.get());
    }
  }
  void visit_filter(const Node* f) {
    if (f && f->kind == NodeKind::kCall) visit_all(f->list);
  }
  void visit(const Node* n) {
    if (!n) return;
    switch (n->kind) {
      case NodeKind::kFor:
        declare_target(n->a.get());
        if (n->b->kind == NodeKind::kSelect) {
          visit(n->b->a.get());
          visit_all(n->body);
          visit_all(n->alt);
          visit(n->b->b.get());
          return;
        }
        visit(n->b.get());
        visit_all(n->body);
        visit_all(n->alt);
        return;
      case NodeKind::kSet:
        declare_target(n->a.get());
        visit(n->b.get());
        visit_all(n->body);
        return;
      case NodeKind::kMacro:
        declare_params(n->list);
        visit_defaults(n->list);
        visit_all(n->body);
        return;
      case NodeKind::kCallBlock:
        visit(n->a.get());
        declare_params(n->list);
        visit_defaults(n->list);
        visit_all(n->body);
        return;
      case NodeKind::kFilterBlock:
        visit_all(n->body);
        visit_filter(n->b.get());
        return;
      case NodeKind::kIdentifier:
        if (n->str == "kwargs" && !declared_kwargs_) kwargs = true;
        if (n->str == "varargs" && !declared_varargs_) varargs = true;
        return;
      case NodeKind::kMember:
        visit(n->a.get());
        if (n->flag) visit(n->b.get());
        return;
      case NodeKind::kFilter:
        visit(n->a.get());
        visit_filter(n->b.get());
        return;
      case NodeKind::kTest:
        visit(n->a.get());
        return;
      case NodeKind::kSelect:
        visit(n->b.get());
        visit(n->a.get());
        return;
      case NodeKind::kKwArg:
        visit(n->a.get());
        return;
      default:
        // Field order of the TS classes: a, b, c, then lists / blocks.
        visit(n->a.get());
        visit(n->b.get());
        visit(n->c.get());
        visit_all(n->list);
        for (const auto& [k, v] : n->pairs) {
          visit(k.get());
          visit(v.get());
        }
        visit_all(n->body);
        visit_all(n->alt);
    }
  }
  bool declared_kwargs_ = false, declared_varargs_ = false;
};

}  // namespace

void find_special_macro_args(Node* def) {
  SpecialArgFinder f;
  f.declare_params(def->list);
  f.visit_all(def->body);
  def->uses_kwargs = f.kwargs;
  def->uses_varargs = f.varargs;
}

}  // namespace lp::text::jinja
