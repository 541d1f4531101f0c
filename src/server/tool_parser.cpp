#include "server/tool_parser.h"

#include <fmt/format.h>

#include <random>

#include "server/api_error.h"
#include "server/openai_request_util.h"

namespace lp::server {

using ojson = nlohmann::ordered_json;
using State = ToolCallStream::State;
using JsonScan = ToolCallStream::JsonScan;

namespace {

constexpr std::string_view kHermesStart = "<tool_call>";
constexpr std::string_view kHermesEnd = "</tool_call>";
constexpr std::string_view kPythonTag = "<|python_tag|>";
constexpr std::string_view kMistralStart = "[TOOL_CALLS]";
constexpr const char* kWs = " \t\r\n";

bool is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}
size_t skip_ws(std::string_view t, size_t i) {
  while (i < t.size() && is_ws(t[i])) ++i;
  return i;
}
bool starts_with_at(std::string_view t, size_t i, std::string_view m) {
  return t.substr(i, m.size()) == m;
}
// t[i..] is a proper prefix of m: the marker may still be completing.
bool partial_marker_at(std::string_view t, size_t i, std::string_view m) {
  std::string_view rest = t.substr(i);
  return rest.size() < m.size() && m.substr(0, rest.size()) == rest;
}

// One past the end of the balanced JSON object or array starting at t[start] ('{' or '['), or npos when the
// text ends first. Brackets inside strings (escapes included) do not count; validity is left to the parser.
// `scan` carries the scan of `start` across calls, so a call streamed in many deltas is read once, not once
// per delta.
size_t json_value_end(std::string_view t, size_t start, JsonScan& scan) {
  if (scan.start != start) scan = JsonScan{start, start};
  if (scan.end != std::string_view::npos) return scan.end;
  for (size_t i = scan.pos; i < t.size(); ++i) {
    char c = t[i];
    if (scan.in_str) {
      if (scan.esc)
        scan.esc = false;
      else if (c == '\\')
        scan.esc = true;
      else if (c == '"')
        scan.in_str = false;
      continue;
    }
    if (c == '"')
      scan.in_str = true;
    else if (c == '{' || c == '[')
      ++scan.depth;
    else if ((c == '}' || c == ']') && --scan.depth == 0)
      return scan.end = i + 1;
  }
  scan.pos = t.size();
  return std::string_view::npos;
}

std::optional<ojson> parse_json(std::string_view s) {
  ojson j = ojson::parse(s.begin(), s.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

// The arguments as an object: an object, or a string holding one (some models quote them).
std::optional<ojson> arguments_object(const ojson& a) {
  if (a.is_object()) return a;
  if (a.is_string()) {
    auto j = parse_json(a.get_ref<const std::string&>());
    if (j && j->is_object()) return j;
  }
  return std::nullopt;
}

// {"name": non-empty string, "arguments" | "parameters": object} as a call; nullopt for anything else.
std::optional<ToolCall> call_from_json(const ojson& j, ToolParserKind kind) {
  if (!j.is_object()) return std::nullopt;
  auto n = j.find("name");
  if (n == j.end() || !n->is_string() || n->get_ref<const std::string&>().empty()) return std::nullopt;
  auto a = j.find("arguments");
  if (a == j.end()) a = j.find("parameters");  // Llama 3's own prompt asks for "parameters"
  if (a == j.end()) return std::nullopt;
  auto args = arguments_object(*a);
  if (!args) return std::nullopt;
  return ToolCall{make_tool_call_id(kind), n->get<std::string>(), dump_json(*args)};
}

// One decided piece of the text at `pos`: content ([pos, end) verbatim), calls (the text [pos, end) dropped),
// a skip ([pos, end) dropped, e.g. separators; the state may change), or "more text is needed".
struct Item {
  enum Kind { kMore, kContent, kCalls, kSkip } kind = kMore;
  size_t end = 0;
  std::vector<ToolCall> calls;
};
Item more() {
  return {};
}
Item content(size_t end) {
  return {Item::kContent, end, {}};
}
Item skip(size_t end) {
  return {Item::kSkip, end, {}};
}
Item calls(size_t end, std::vector<ToolCall> c) {
  return {Item::kCalls, end, std::move(c)};
}

// Text outside calls, up to the next `marker`; a tail that may be the marker's start is held back.
Item outside_until(std::string_view t, size_t pos, std::string_view marker, bool at_end) {
  size_t p = t.find(marker, pos);
  if (p != std::string_view::npos) return content(p);
  size_t end = t.size();
  if (!at_end)
    for (size_t k = std::min(marker.size() - 1, t.size() - pos); k > 0; --k)
      if (t.substr(t.size() - k) == marker.substr(0, k)) {
        end = t.size() - k;
        break;
      }
  return end > pos ? content(end) : more();
}

// hermes: `<tool_call>JSON</tool_call>`; the closing tag may be missing at the very end (vLLM's regex allows
// it). The object's end is found by its brackets, so a "</tool_call>" inside a string argument does not cut
// it. A bad block: its opening tag is content, and the scan goes on after it.
Item hermes_step(std::string_view t, size_t pos, bool at_end, JsonScan& scan) {
  if (!starts_with_at(t, pos, kHermesStart)) return outside_until(t, pos, kHermesStart, at_end);
  const Item bad = content(pos + kHermesStart.size());
  size_t i = skip_ws(t, pos + kHermesStart.size());
  if (i == t.size()) return at_end ? bad : more();
  if (t[i] != '{') return bad;
  size_t e = json_value_end(t, i, scan);
  if (e == std::string_view::npos) return at_end ? bad : more();
  size_t k = skip_ws(t, e), end = 0;
  if (starts_with_at(t, k, kHermesEnd))
    end = k + kHermesEnd.size();
  else if (k == t.size() || partial_marker_at(t, k, kHermesEnd)) {
    if (!at_end) return more();
    if (k < t.size()) return bad;
    end = k;
  } else {
    return bad;
  }
  if (auto j = parse_json(t.substr(i, e - i)))
    if (auto c = call_from_json(*j, ToolParserKind::kHermes)) return calls(end, {std::move(*c)});
  return bad;
}

// mistral: `[TOOL_CALLS][{"name", "arguments"}, ...]`, or v11's `[TOOL_CALLS]name{arguments}`.
Item mistral_step(std::string_view t, size_t pos, bool at_end, JsonScan& scan) {
  if (!starts_with_at(t, pos, kMistralStart)) return outside_until(t, pos, kMistralStart, at_end);
  const Item bad = content(pos + kMistralStart.size());
  size_t i = skip_ws(t, pos + kMistralStart.size());
  if (i == t.size()) return at_end ? bad : more();
  if (t[i] == '[') {
    size_t e = json_value_end(t, i, scan);
    if (e == std::string_view::npos) return at_end ? bad : more();
    auto j = parse_json(t.substr(i, e - i));
    if (!j || !j->is_array() || j->empty()) return bad;
    std::vector<ToolCall> out;
    for (const auto& item : *j) {
      auto c = call_from_json(item, ToolParserKind::kMistral);
      if (!c) return bad;
      out.push_back(std::move(*c));
    }
    return calls(e, std::move(out));
  }
  auto name_char = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'; };
  size_t k = i;
  while (k < t.size() && name_char(t[k])) ++k;
  if (k == i) return bad;
  if (k == t.size()) return at_end ? bad : more();
  if (t[k] != '{') return bad;
  size_t e = json_value_end(t, k, scan);
  if (e == std::string_view::npos) return at_end ? bad : more();
  auto args = parse_json(t.substr(k, e - k));
  if (!args || !args->is_object()) return bad;
  return calls(e, {ToolCall{make_tool_call_id(ToolParserKind::kMistral), std::string(t.substr(i, k - i)),
                            dump_json(*args)}});
}

// llama3_json: one JSON object at [i, ...); a call, or (bad or unfinished at the end) the rest is content.
Item llama_object(std::string_view t, size_t pos, size_t i, bool at_end, State& state, JsonScan& scan) {
  if (i == t.size()) return at_end ? skip(i) : more();
  if (t[i] != '{') {
    state = State::kContentOnly;
    return skip(pos);
  }
  size_t e = json_value_end(t, i, scan);
  if (e == std::string_view::npos) {
    if (!at_end) return more();
    state = State::kContentOnly;
    return skip(pos);
  }
  auto j = parse_json(t.substr(i, e - i));
  auto c = j ? call_from_json(*j, ToolParserKind::kLlama3Json) : std::nullopt;
  if (!c) {
    state = State::kContentOnly;
    return skip(pos);
  }
  state = State::kLlamaAfterObject;
  return calls(e, {std::move(*c)});
}

// llama3_json: the reply is calls only when it opens with `<|python_tag|>` or `{` (leading whitespace aside);
// then objects separated by `;`. Whatever does not fit ends the calls: the rest is content.
Item llama_step(std::string_view t, size_t pos, bool at_end, State& state, JsonScan& scan) {
  switch (state) {
    case State::kStart: {
      size_t i = skip_ws(t, pos);
      if (i == t.size()) return at_end ? content(i) : more();
      if (starts_with_at(t, i, kPythonTag))
        return llama_object(t, pos, skip_ws(t, i + kPythonTag.size()), at_end, state, scan);
      if (t[i] == '{') return llama_object(t, pos, i, at_end, state, scan);
      if (!at_end && partial_marker_at(t, i, kPythonTag)) return more();
      state = State::kContentOnly;
      return skip(pos);
    }
    case State::kLlamaRegion:
      return llama_object(t, pos, skip_ws(t, pos), at_end, state, scan);
    case State::kLlamaAfterObject: {
      size_t i = skip_ws(t, pos);
      if (i == t.size()) return skip(i);
      if (t[i] == ';') {
        state = State::kLlamaRegion;
        return skip(i + 1);
      }
      state = State::kContentOnly;
      return skip(i);
    }
    default:
      return content(t.size());
  }
}

std::string random_hex32() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{:016x}{:016x}", rng(), rng());
}

}  // namespace

std::optional<ToolParserKind> tool_parser_from_name(std::string_view name) {
  if (name == "hermes") return ToolParserKind::kHermes;
  if (name == "llama3_json") return ToolParserKind::kLlama3Json;
  if (name == "mistral") return ToolParserKind::kMistral;
  return std::nullopt;
}

std::string make_tool_call_id(ToolParserKind kind) {
  if (kind == ToolParserKind::kMistral) {
    static constexpr char kAlnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    thread_local std::mt19937_64 rng{std::random_device{}()};
    std::uniform_int_distribution<int> d(0, sizeof(kAlnum) - 2);
    std::string id(9, 'a');
    for (auto& c : id) c = kAlnum[d(rng)];
    return id;
  }
  return "chatcmpl-tool-" + random_hex32();
}

void ToolCallStream::add_content(std::string_view c, ToolStreamDelta& out) {
  if (after_call_) {
    size_t k = c.find_first_not_of(kWs);
    if (k == std::string_view::npos) return;
    c.remove_prefix(k);
    after_call_ = false;
  }
  size_t k = c.find_last_not_of(kWs);
  if (k == std::string_view::npos) {
    held_ws_ += c;
    return;
  }
  out.content += held_ws_;
  held_ws_.clear();
  out.content += c.substr(0, k + 1);
  held_ws_ = c.substr(k + 1);
}

ToolStreamDelta ToolCallStream::run(bool at_end) {
  ToolStreamDelta out;
  if (state_ == State::kStart && kind_ != ToolParserKind::kLlama3Json) state_ = State::kOutside;
  std::string_view t = text_;
  while (pos_ < t.size()) {
    Item it = kind_ == ToolParserKind::kHermes    ? hermes_step(t, pos_, at_end, scan_)
              : kind_ == ToolParserKind::kMistral ? mistral_step(t, pos_, at_end, scan_)
                                                  : llama_step(t, pos_, at_end, state_, scan_);
    if (it.kind == Item::kMore) break;
    if (it.kind == Item::kContent) add_content(t.substr(pos_, it.end - pos_), out);
    if (it.kind == Item::kCalls) {
      held_ws_.clear();  // whitespace between content and a call is not content
      after_call_ = true;
      for (auto& c : it.calls)
        out.calls.push_back(
            ToolCallDelta{n_calls_++, std::move(c.id), std::move(c.name), std::move(c.arguments)});
    }
    pos_ = it.end;
  }
  // Keep the undecided tail only; rescanning it is cheap next to generating it.
  if (pos_ > 4096) {
    text_.erase(0, pos_);
    pos_ = 0;
    scan_ = JsonScan{};  // its positions moved
  }
  return out;
}

ToolStreamDelta ToolCallStream::feed(std::string_view delta) {
  LP_CHECK(!finished_, "ToolCallStream fed after finish()");
  text_.append(delta);
  return run(false);
}

ToolStreamDelta ToolCallStream::finish() {
  LP_CHECK(!finished_, "ToolCallStream finished twice");
  ToolStreamDelta out = run(true);
  out.content += held_ws_;
  held_ws_.clear();
  finished_ = true;
  return out;
}

ExtractedToolCalls extract_tool_calls(ToolParserKind kind, std::string_view text) {
  ToolCallStream s(kind);
  ExtractedToolCalls r;
  for (ToolStreamDelta d : {s.feed(text), s.finish()}) {
    r.content += d.content;
    for (auto& c : d.calls)
      r.calls.push_back(ToolCall{std::move(c.id), std::move(c.name), std::move(c.arguments)});
  }
  return r;
}

// ---- constrained modes ----

namespace {

bool valid_function_name(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (unsigned char c : s)
    if (!(std::isalnum(c) || c == '_' || c == '-')) return false;
  return true;
}

}  // namespace

std::vector<ToolSpec> validate_tools(const ojson& tools) {
  std::vector<ToolSpec> out;
  if (tools.is_null()) return out;
  if (!tools.is_array()) fail_param("tools", "'tools' must be a list, got {}", request_util::json_type(tools));
  for (size_t i = 0; i < tools.size(); ++i) {
    const ojson& t = tools[i];
    const std::string at = fmt::format("tools[{}]", i);
    if (!t.is_object()) fail_param(at, "{} must be an object, got {}", at, request_util::json_type(t));
    if (auto ty = t.find("type"); ty != t.end() && !(ty->is_string() && *ty == "function"))
      fail_param(at + ".type", "{}.type must be \"function\"", at);
    auto f = t.find("function");
    if (f == t.end() || !f->is_object())
      fail_param(at + ".function", "{}.function must be an object with a name", at);
    auto n = f->find("name");
    if (n == f->end() || !n->is_string())
      fail_param(at + ".function.name", "{}.function.name must be a string", at);
    ToolSpec spec;
    spec.name = n->get<std::string>();
    if (!valid_function_name(spec.name))
      fail_param(at + ".function.name",
                 "{}.function.name '{}' must be 1 to 64 letters, digits, underscores or dashes", at,
                 spec.name);
    if (auto d = f->find("description"); d != f->end() && !d->is_null() && !d->is_string())
      fail_param(at + ".function.description", "{}.function.description must be a string", at);
    if (auto s = f->find("strict"); s != f->end() && !s->is_null() && !s->is_boolean())
      fail_param(at + ".function.strict", "{}.function.strict must be a boolean", at);
    auto p = f->find("parameters");
    if (p != f->end() && !p->is_null()) {
      if (!p->is_object())
        fail_param(at + ".function.parameters", "{}.function.parameters must be a JSON schema object, got {}",
                   at, request_util::json_type(*p));
      if (auto ty = p->find("type"); ty != p->end() && !(ty->is_string() && *ty == "object"))
        fail_param(at + ".function.parameters",
                   "{}.function.parameters must describe an object (\"type\": \"object\")", at);
      if (!p->empty()) spec.parameters = *p;
    }
    // vLLM's default for a function without parameters: it takes an empty object.
    if (spec.parameters.is_null())
      spec.parameters = {{"type", "object"}, {"properties", ojson::object()}};
    out.push_back(std::move(spec));
  }
  return out;
}

const ToolSpec& find_tool(const std::vector<ToolSpec>& tools, const std::string& name) {
  for (const auto& t : tools)
    if (t.name == name) return t;
  fail_param("tool_choice", "tool_choice names the function '{}', which is not in 'tools'", name);
}

ojson named_tool_schema(const ToolSpec& tool) {
  return tool.parameters;
}

ojson required_tools_schema(const std::vector<ToolSpec>& tools, bool parallel_tool_calls) {
  using json = ojson;
  json any = json::array();
  json defs = json::object();
  for (const auto& t : tools) {
    json params = t.parameters;
    if (auto d = params.find("$defs"); d != params.end()) {
      if (d->is_object())
        for (auto& [k, v] : d->items()) defs[k] = v;
      params.erase("$defs");
    }
    any.push_back(
        {{"type", "object"},
         {"properties", {{"name", {{"type", "string"}, {"enum", {t.name}}}}, {"parameters", params}}},
         {"required", {"name", "parameters"}},
         {"additionalProperties", false}});
  }
  json s = {{"type", "array"}, {"minItems", 1}, {"items", {{"anyOf", std::move(any)}}}};
  if (!parallel_tool_calls) s["maxItems"] = 1;
  if (!defs.empty()) s["$defs"] = std::move(defs);
  return s;
}

ToolCall call_from_named_output(const std::string& name, std::string_view output) {
  return ToolCall{make_tool_call_id(), name, std::string(output)};
}

std::optional<std::vector<ToolCall>> calls_from_required_output(std::string_view output) {
  auto j = parse_json(output);
  if (!j || !j->is_array() || j->empty()) return std::nullopt;
  std::vector<ToolCall> out;
  for (const auto& item : *j) {
    if (!item.is_object()) return std::nullopt;
    auto n = item.find("name");
    auto p = item.find("parameters");
    if (n == item.end() || !n->is_string() || p == item.end() || !p->is_object()) return std::nullopt;
    out.push_back(ToolCall{make_tool_call_id(), n->get<std::string>(), dump_json(*p)});
  }
  return out;
}

}  // namespace lp::server
