// Jinja parser, ported from @huggingface/jinja 0.5.11 src/parser.ts (see parser.h).
#include "text/jinja/parser.h"

#include <algorithm>
#include <initializer_list>
#include <set>
#include <string_view>

#include "core/check.h"

namespace lp::text::jinja {

namespace {

class Parser {
 public:
  explicit Parser(const std::vector<Token>& tokens) : t_(tokens) {}

  Program run() {
    Program p;
    while (cur_ < t_.size()) p.body.push_back(parse_any());
    return p;
  }

 private:
  // Counts recursion; fails past kMaxParseDepth.
  struct DepthGuard {
    explicit DepthGuard(Parser* p) : p(p) {
      if (++p->depth_ > kMaxParseDepth) fail("jinja: template nesting deeper than {}", kMaxParseDepth);
    }
    ~DepthGuard() { --p->depth_; }
    Parser* p;
  };

  static NodePtr node(NodeKind k) { return std::make_unique<Node>(k); }

  // Sets the subtree height from the children, rejecting trees too deep to evaluate recursively.
  static NodePtr finish(NodePtr n) {
    int d = 0;
    for (const Node* c : {n->a.get(), n->b.get(), n->c.get()}) {
      if (c) d = std::max(d, c->depth);
    }
    for (const auto& c : n->list) d = std::max(d, c->depth);
    for (const auto& [k, v] : n->pairs) d = std::max({d, k->depth, v->depth});
    n->depth = d + 1;
    if (n->depth > kMaxParseDepth) fail("jinja: expression nesting deeper than {}", kMaxParseDepth);
    return n;
  }

  const Token& tok(size_t i) const {
    if (i >= t_.size()) fail("jinja: unexpected end of template");
    return t_[i];
  }
  const Token& next() { return tok(cur_++); }
  bool is(Tok a) const { return cur_ < t_.size() && t_[cur_].type == a; }
  bool is(Tok a, Tok b) const { return cur_ + 1 < t_.size() && t_[cur_].type == a && t_[cur_ + 1].type == b; }
  bool is_statement(std::initializer_list<std::string_view> names) const {
    if (cur_ + 1 >= t_.size() || t_[cur_].type != Tok::kOpenStatement || t_[cur_ + 1].type != Tok::kIdent) {
      return false;
    }
    return std::find(names.begin(), names.end(), t_[cur_ + 1].value) != names.end();
  }
  bool is_identifier(std::string_view name, size_t k = 0) const {
    return cur_ + k < t_.size() && t_[cur_ + k].type == Tok::kIdent && t_[cur_ + k].value == name;
  }
  const Token& expect(Tok type, std::string_view what) {
    if (cur_ >= t_.size()) fail("jinja: Parser Error: {}, got the end of the template", what);
    const Token& t = t_[cur_++];
    if (t.type != type) fail("jinja: Parser Error: {}. {} !== {}.", what, tok_name(t.type), tok_name(type));
    return t;
  }
  void expect_identifier(std::string_view name) {
    if (!is_identifier(name)) fail("jinja: Expected {}", name);
    ++cur_;
  }
  void expect_end_tag(std::string_view name) {
    expect(Tok::kOpenStatement, "Expected {% token");
    expect_identifier(name);
    expect(Tok::kCloseStatement, "Expected %} token");
  }
  // Parses statements until one of `ends` opens; fails at the end of the template (naming the last of
  // `ends`, the tag that closes the block).
  void parse_block_until(std::vector<NodePtr>* out, std::initializer_list<std::string_view> ends) {
    while (!is_statement(ends)) {
      if (cur_ >= t_.size()) fail("jinja: unexpected end of template: missing {{% {} %}}", *(ends.end() - 1));
      out->push_back(parse_any());
    }
  }

  NodePtr parse_any() {
    DepthGuard g(this);
    const Token& t = tok(cur_);
    switch (t.type) {
      case Tok::kComment: {
        ++cur_;
        return node(NodeKind::kComment);
      }
      case Tok::kText: {
        auto n = node(NodeKind::kText);
        n->str = next().value;
        return n;
      }
      case Tok::kOpenStatement:
        return parse_statement();
      case Tok::kOpenExpression: {
        ++cur_;
        auto e = parse_expression();
        expect(Tok::kCloseExpression, "Expected closing expression token");
        return e;
      }
      default:
        fail("jinja: Unexpected token type: {}", tok_name(t.type));
    }
  }

  NodePtr parse_statement() {
    expect(Tok::kOpenStatement, "Expected opening statement token");
    const Token& t = tok(cur_);
    if (t.type != Tok::kIdent) fail("jinja: Unknown statement, got {}", tok_name(t.type));
    const std::string name = t.value;
    ++cur_;
    if (name == "set") return parse_set();
    if (name == "if") {
      auto n = parse_if();
      expect_end_tag("endif");
      return n;
    }
    if (name == "macro") {
      auto n = parse_macro();
      expect_end_tag("endmacro");
      return n;
    }
    if (name == "for") {
      auto n = parse_for();
      expect_end_tag("endfor");
      return n;
    }
    if (name == "call") return parse_call_block();
    if (name == "break" || name == "continue") {
      expect(Tok::kCloseStatement, "Expected closing statement token");
      return node(name == "break" ? NodeKind::kBreak : NodeKind::kContinue);
    }
    if (name == "filter") {
      auto n = node(NodeKind::kFilterBlock);
      auto f = parse_primary();
      if (f->kind == NodeKind::kIdentifier && is(Tok::kOpenParen)) f = parse_call(std::move(f));
      n->b = std::move(f);
      expect(Tok::kCloseStatement, "Expected closing statement token");
      parse_block_until(&n->body, {"endfilter"});
      expect_end_tag("endfilter");
      return n;
    }
    fail("jinja: Unknown statement type: {}", name);
  }

  NodePtr parse_call_block() {
    auto n = node(NodeKind::kCallBlock);
    if (is(Tok::kOpenParen)) n->list = parse_args(/*parameters=*/true);
    auto callee = parse_primary();
    if (callee->kind != NodeKind::kIdentifier) fail("jinja: Expected identifier following call statement");
    auto call = node(NodeKind::kCall);
    call->a = std::move(callee);
    call->list = parse_args(false);
    n->a = finish(std::move(call));
    expect(Tok::kCloseStatement, "Expected closing statement token");
    parse_block_until(&n->body, {"endcall"});
    expect_end_tag("endcall");
    find_special_macro_args(n.get());
    return n;
  }

  NodePtr parse_set() {
    auto n = node(NodeKind::kSet);
    n->a = parse_expression_sequence(false);
    if (is(Tok::kEquals)) {
      ++cur_;
      n->b = parse_expression_sequence(false);
    } else {
      expect(Tok::kCloseStatement, "Expected %} token");
      parse_block_until(&n->body, {"endset"});
      expect(Tok::kOpenStatement, "Expected {% token");
      expect_identifier("endset");
    }
    expect(Tok::kCloseStatement, "Expected closing statement token");
    return n;
  }

  NodePtr parse_if() {
    DepthGuard g(this);
    auto n = node(NodeKind::kIf);
    n->a = parse_expression();
    expect(Tok::kCloseStatement, "Expected closing statement token");
    parse_block_until(&n->body, {"elif", "else", "endif"});
    if (is_statement({"elif"})) {
      cur_ += 2;
      n->alt.push_back(parse_if());
    } else if (is_statement({"else"})) {
      cur_ += 2;
      expect(Tok::kCloseStatement, "Expected closing statement token");
      parse_block_until(&n->alt, {"endif"});
    }
    return n;
  }

  NodePtr parse_macro() {
    auto n = node(NodeKind::kMacro);
    auto name = parse_primary();
    if (name->kind != NodeKind::kIdentifier) fail("jinja: Expected identifier following macro statement");
    n->str = name->str;
    n->list = parse_args(true);
    expect(Tok::kCloseStatement, "Expected closing statement token");
    parse_block_until(&n->body, {"endmacro"});
    find_special_macro_args(n.get());
    return n;
  }

  NodePtr parse_expression_sequence(bool primary) {
    auto first = primary ? parse_primary() : parse_expression();
    if (!is(Tok::kComma)) return first;
    auto tuple = node(NodeKind::kTupleLit);
    tuple->list.push_back(std::move(first));
    while (true) {
      ++cur_;
      tuple->list.push_back(primary ? parse_primary() : parse_expression());
      if (!is(Tok::kComma)) break;
    }
    return finish(std::move(tuple));
  }

  NodePtr parse_for() {
    auto n = node(NodeKind::kFor);
    n->a = parse_expression_sequence(true);
    if (n->a->kind != NodeKind::kIdentifier && n->a->kind != NodeKind::kTupleLit) {
      fail("jinja: Expected identifier/tuple for the loop variable, got {} instead",
           node_kind_name(n->a->kind));
    }
    if (!is_identifier("in")) fail("jinja: Expected `in` keyword following loop variable");
    ++cur_;
    n->b = parse_expression();
    expect(Tok::kCloseStatement, "Expected closing statement token");
    parse_block_until(&n->body, {"else", "endfor"});
    if (is_statement({"else"})) {
      cur_ += 2;
      expect(Tok::kCloseStatement, "Expected closing statement token");
      parse_block_until(&n->alt, {"endfor"});
    }
    return n;
  }

  NodePtr parse_expression() {
    DepthGuard g(this);
    return parse_if_expression();
  }

  NodePtr parse_if_expression() {
    auto a = parse_logical_or();
    if (!is_identifier("if")) return a;
    ++cur_;
    auto test = parse_logical_or();
    if (is_identifier("else")) {
      ++cur_;
      DepthGuard g(this);
      auto n = node(NodeKind::kTernary);
      n->a = std::move(test);
      n->b = std::move(a);
      n->c = parse_if_expression();
      return finish(std::move(n));
    }
    auto n = node(NodeKind::kSelect);
    n->a = std::move(a);
    n->b = std::move(test);
    return finish(std::move(n));
  }

  NodePtr binary(std::string op, NodePtr l, NodePtr r) {
    auto n = node(NodeKind::kBinary);
    n->str = std::move(op);
    n->a = std::move(l);
    n->b = std::move(r);
    return finish(std::move(n));
  }

  NodePtr parse_logical_or() {
    auto left = parse_logical_and();
    while (is_identifier("or")) {
      ++cur_;
      left = binary("or", std::move(left), parse_logical_and());
    }
    return left;
  }

  NodePtr parse_logical_and() {
    auto left = parse_logical_not();
    while (is_identifier("and")) {
      ++cur_;
      left = binary("and", std::move(left), parse_logical_not());
    }
    return left;
  }

  NodePtr parse_logical_not() {
    DepthGuard g(this);
    NodePtr right;
    while (is_identifier("not")) {
      ++cur_;
      auto n = node(NodeKind::kUnary);
      n->str = "not";
      n->a = parse_logical_not();
      right = finish(std::move(n));
    }
    return right ? std::move(right) : parse_comparison();
  }

  NodePtr parse_comparison() {
    auto left = parse_additive();
    while (true) {
      std::string op;
      if (is_identifier("not") && is_identifier("in", 1)) {
        op = "not in";
        cur_ += 2;
      } else if (is_identifier("in")) {
        op = "in";
        ++cur_;
      } else if (is(Tok::kComparison)) {
        op = next().value;
      } else {
        break;
      }
      left = binary(std::move(op), std::move(left), parse_additive());
    }
    return left;
  }

  NodePtr parse_additive() {
    auto left = parse_multiplicative();
    while (is(Tok::kAdditive)) {
      std::string op = next().value;
      left = binary(std::move(op), std::move(left), parse_multiplicative());
    }
    return left;
  }

  NodePtr parse_multiplicative() {
    auto left = parse_power();
    while (is(Tok::kMultiplicative)) {
      std::string op = next().value;
      left = binary(std::move(op), std::move(left), parse_power());
    }
    return left;
  }

  NodePtr parse_power() {
    auto left = parse_test();
    while (is(Tok::kPower)) {
      std::string op = next().value;
      left = binary(std::move(op), std::move(left), parse_test());
    }
    return left;
  }

  NodePtr parse_test() {
    auto operand = parse_filter();
    while (is_identifier("is")) {
      ++cur_;
      const bool negate = is_identifier("not");
      if (negate) ++cur_;
      auto test = parse_primary();
      if (test->kind != NodeKind::kIdentifier) fail("jinja: Expected identifier for the test");
      auto n = node(NodeKind::kTest);
      n->a = std::move(operand);
      n->str = test->str;
      n->flag = negate;
      operand = finish(std::move(n));
    }
    return operand;
  }

  NodePtr parse_filter() {
    auto operand = parse_unary_sign();
    while (is(Tok::kPipe)) {
      ++cur_;
      auto f = parse_primary();
      if (f->kind != NodeKind::kIdentifier) fail("jinja: Expected identifier for the filter");
      if (is(Tok::kOpenParen)) f = parse_call(std::move(f));
      auto n = node(NodeKind::kFilter);
      n->a = std::move(operand);
      n->b = std::move(f);
      operand = finish(std::move(n));
    }
    return operand;
  }

  NodePtr parse_unary_sign() {
    DepthGuard g(this);
    if (cur_ < t_.size() && (t_[cur_].type == Tok::kUnary || t_[cur_].type == Tok::kAdditive) &&
        (t_[cur_].value == "-" || t_[cur_].value == "+")) {
      auto n = node(NodeKind::kUnary);
      n->str = next().value;
      n->a = parse_unary_sign();
      return finish(std::move(n));
    }
    return parse_call_member();
  }

  NodePtr parse_call_member() {
    auto member = parse_member(parse_primary());
    if (is(Tok::kOpenParen)) return parse_call(std::move(member));
    return member;
  }

  NodePtr parse_call(NodePtr callee) {
    DepthGuard g(this);
    auto n = node(NodeKind::kCall);
    n->a = std::move(callee);
    n->list = parse_args(false);
    NodePtr e = parse_member(finish(std::move(n)));
    if (is(Tok::kOpenParen)) e = parse_call(std::move(e));
    return e;
  }

  std::vector<NodePtr> parse_args(bool parameters) {
    expect(Tok::kOpenParen, "Expected opening parenthesis for arguments list");
    std::vector<NodePtr> args;
    std::set<std::string> names;
    bool saw_keyword = false, saw_spread = false;
    while (!is(Tok::kCloseParen)) {
      if (cur_ >= t_.size()) fail("jinja: unexpected end of template in an argument list");
      const bool kw_spread = is(Tok::kPower);
      const bool pos_spread = is(Tok::kMultiplicative) && t_[cur_].value == "*";
      if (parameters && (kw_spread || pos_spread)) {
        fail("jinja: Argument unpacking is not allowed in parameter declarations");
      }
      if (kw_spread) {
        ++cur_;
        auto n = node(NodeKind::kKwSpread);
        n->a = parse_expression();
        args.push_back(finish(std::move(n)));
        if (is(Tok::kComma)) ++cur_;
        if (!is(Tok::kCloseParen))
          fail("jinja: Expected closing parenthesis: `**` must be applied to the final argument");
        break;
      }
      NodePtr arg;
      if (pos_spread) {
        if (saw_spread) fail("jinja: Only one `*` argument unpacking is allowed");
        saw_spread = true;
        ++cur_;
        arg = node(NodeKind::kSpread);
        arg->a = parse_expression();
        arg = finish(std::move(arg));
      } else {
        arg = parse_expression();
        if (is(Tok::kEquals)) {
          ++cur_;
          if (arg->kind != NodeKind::kIdentifier) {
            fail("jinja: {}", parameters ? "Expected identifier for parameter declaration"
                                         : "Expected identifier for keyword argument");
          }
          auto kw = node(NodeKind::kKwArg);
          kw->str = arg->str;
          kw->a = parse_expression();
          arg = finish(std::move(kw));
        }
        if (parameters) {
          if (arg->kind != NodeKind::kIdentifier && arg->kind != NodeKind::kKwArg) {
            fail("jinja: Expected identifier for parameter declaration");
          }
          if (!names.insert(arg->str).second) fail("jinja: Duplicate parameter name: {}", arg->str);
        }
        if (arg->kind == NodeKind::kKwArg) {
          saw_keyword = true;
        } else if (saw_keyword) {
          fail("jinja: {}", parameters ? "Non-default argument follows default argument"
                                       : "Positional arguments must come before keyword arguments");
        } else if (saw_spread) {
          fail("jinja: Positional arguments must not follow `*` argument unpacking");
        }
      }
      args.push_back(std::move(arg));
      if (is(Tok::kComma)) ++cur_;
    }
    ++cur_;  // the closing parenthesis
    return args;
  }

  NodePtr parse_subscript() {
    std::vector<NodePtr> slices;
    bool is_slice = false;
    while (!is(Tok::kCloseSquare)) {
      if (cur_ >= t_.size()) fail("jinja: unexpected end of template in a subscript");
      if (is(Tok::kColon)) {
        slices.push_back(nullptr);
        ++cur_;
        is_slice = true;
      } else {
        slices.push_back(parse_expression());
        if (is(Tok::kColon)) {
          ++cur_;
          is_slice = true;
        }
      }
    }
    if (slices.empty()) fail("jinja: Expected at least one argument for member/slice expression");
    if (!is_slice) return std::move(slices[0]);
    if (slices.size() > 3) fail("jinja: Expected 0-3 arguments for slice expression");
    auto n = node(NodeKind::kSlice);
    n->a = std::move(slices[0]);
    if (slices.size() > 1) n->b = std::move(slices[1]);
    if (slices.size() > 2) n->c = std::move(slices[2]);
    return finish(std::move(n));
  }

  NodePtr parse_member(NodePtr object) {
    while (is(Tok::kDot) || is(Tok::kOpenSquare)) {
      const bool computed = next().type == Tok::kOpenSquare;
      auto n = node(NodeKind::kMember);
      n->flag = computed;
      n->a = std::move(object);
      if (computed) {
        n->b = parse_subscript();
        expect(Tok::kCloseSquare, "Expected closing square bracket");
      } else {
        n->b = parse_primary();
        if (n->b->kind != NodeKind::kIdentifier && n->b->kind != NodeKind::kIntLit) {
          fail("jinja: Expected identifier or integer following dot operator");
        }
      }
      object = finish(std::move(n));
    }
    return object;
  }

  NodePtr parse_primary() {
    DepthGuard g(this);
    const Token& t = next();
    switch (t.type) {
      case Tok::kNumber: {
        const bool is_float = t.value.find('.') != std::string::npos;
        auto n = node(is_float ? NodeKind::kFloatLit : NodeKind::kIntLit);
        n->num = std::strtod(t.value.c_str(), nullptr);
        return n;
      }
      case Tok::kString: {
        auto n = node(NodeKind::kStringLit);
        n->str = t.value;
        while (is(Tok::kString)) n->str += next().value;
        return n;
      }
      case Tok::kIdent: {
        auto n = node(NodeKind::kIdentifier);
        n->str = t.value;
        return n;
      }
      case Tok::kOpenParen: {
        auto e = parse_expression_sequence(false);
        expect(Tok::kCloseParen, "Expected closing parenthesis");
        return e;
      }
      case Tok::kOpenSquare: {
        auto n = node(NodeKind::kArrayLit);
        while (!is(Tok::kCloseSquare)) {
          if (cur_ >= t_.size()) fail("jinja: unexpected end of template in a list literal");
          n->list.push_back(parse_expression());
          if (is(Tok::kComma)) ++cur_;
        }
        ++cur_;
        return finish(std::move(n));
      }
      case Tok::kOpenCurly: {
        auto n = node(NodeKind::kObjectLit);
        while (!is(Tok::kCloseCurly)) {
          if (cur_ >= t_.size()) fail("jinja: unexpected end of template in a dict literal");
          auto key = parse_expression();
          expect(Tok::kColon, "Expected colon between key and value in object literal");
          auto value = parse_expression();
          n->pairs.emplace_back(std::move(key), std::move(value));
          if (is(Tok::kComma)) ++cur_;
        }
        ++cur_;
        return finish(std::move(n));
      }
      default:
        fail("jinja: Unexpected token: {}", tok_name(t.type));
    }
  }

  const std::vector<Token>& t_;
  size_t cur_ = 0;
  int depth_ = 0;
};

}  // namespace

Program parse(const std::vector<Token>& tokens) {
  return Parser(tokens).run();
}

}  // namespace lp::text::jinja
