// Tool calls in generated text, as vLLM's --tool-call-parser reads them: hermes (`<tool_call>{...}
// </tool_call>` blocks), llama3_json (a JSON object, optionally after `<|python_tag|>`, several separated by
// `;`) and mistral (`[TOOL_CALLS]` then a JSON list of {"name", "arguments"}, or v11's
// `[TOOL_CALLS]name{...}`). Pure functions of text, so every format is unit-tested without a model; the
// streaming extractor and the whole-text parser run the same scanner, so a stream always adds up to the
// non-streaming reply.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lp::server {

enum class ToolParserKind { kHermes, kLlama3Json, kMistral };

// "hermes" | "llama3_json" | "mistral" (vLLM's names); nullopt for anything else.
std::optional<ToolParserKind> tool_parser_from_name(std::string_view name);
inline constexpr const char* kToolParserNames = "hermes, llama3_json, mistral";

// One call as the reply shows it; `arguments` is JSON text (an object, serialized compactly).
struct ToolCall {
  std::string id;
  std::string name;
  std::string arguments;
};

// A fresh call id in vLLM's style for the parser: "chatcmpl-tool-<32 hex>", or for mistral 9 alphanumerics
// (Mistral's chat templates reject any other id when the call is sent back).
std::string make_tool_call_id(ToolParserKind kind = ToolParserKind::kHermes);

// The text of a whole reply split into content (the text outside the calls; whitespace that only separates
// calls from each other or from the content is dropped) and calls. A block whose JSON does not parse, or is
// not {"name": string, "arguments"/"parameters": object}, stays content, as vLLM keeps it (vLLM turns the
// whole reply into content when any block is bad; here only that block is, so a stream never takes back a
// call).
struct ExtractedToolCalls {
  std::string content;
  std::vector<ToolCall> calls;
};
ExtractedToolCalls extract_tool_calls(ToolParserKind kind, std::string_view text);

// What one fed delta adds to the reply, in OpenAI's stream shape: content text, and tool-call deltas. A call
// is reported whole once its text is complete: `first` deltas carry index, id, type "function" and the name;
// the arguments are sent in the same delta.
struct ToolCallDelta {
  int index = 0;
  std::string id;
  std::string name;
  std::string arguments;
};
struct ToolStreamDelta {
  std::string content;
  std::vector<ToolCallDelta> calls;
  bool empty() const { return content.empty() && calls.empty(); }
};

// The streaming extractor: feed() each text delta of a choice, finish() once at its end. Text that might be
// the start of a marker or of a call is held back (never sent as content) until it is decided; the content of
// all deltas concatenated equals extract_tool_calls(text).content, and the calls are the same.
class ToolCallStream {
 public:
  explicit ToolCallStream(ToolParserKind kind) : kind_(kind) {}
  ToolStreamDelta feed(std::string_view delta);
  ToolStreamDelta finish();
  int calls() const { return n_calls_; }

  // The parser's state between items (internal; public only for the scanner in tool_parser.cpp).
  enum class State { kStart, kOutside, kLlamaRegion, kLlamaAfterObject, kContentOnly };
  // The bracket scan of the JSON value starting at `start` (npos: none), resumed as text arrives.
  struct JsonScan {
    size_t start = std::string_view::npos;
    size_t pos = 0;                       // scanned up to here
    size_t end = std::string_view::npos;  // the value's end once found
    int depth = 0;
    bool in_str = false, esc = false;
  };

 private:
  ToolStreamDelta run(bool at_end);
  void add_content(std::string_view c, ToolStreamDelta& out);

  ToolParserKind kind_;
  State state_ = State::kStart;
  JsonScan scan_;
  std::string text_;  // everything fed; [pos_, end) is not decided yet
  size_t pos_ = 0;
  std::string held_ws_;      // trailing whitespace of the content, sent when more content follows
  bool after_call_ = false;  // drop the whitespace that follows a call
  int n_calls_ = 0;
  bool finished_ = false;
};

// ---- tool_choice "required" and a named function: the constrained modes ----

// One entry of `tools`, validated.
struct ToolSpec {
  std::string name;
  nlohmann::ordered_json parameters;  // a JSON schema of an object (the client's key order: properties are
                                     // generated in it); {"type":"object","properties":{}} when absent
};

// Checks `tools` (null or a list) as vLLM's request model does: each entry {"type": "function", "function":
// {"name": identifier, "description"?: string, "parameters"?: object schema, "strict"?: bool}}; ApiError
// (kInvalid) naming the field, e.g. "tools[1].function.name". Names are [A-Za-z0-9_-]{1,64} (OpenAI's rule).
std::vector<ToolSpec> validate_tools(const nlohmann::ordered_json& tools);

// The tool a named tool_choice points at; ApiError(kInvalid, param "tool_choice") when absent.
const ToolSpec& find_tool(const std::vector<ToolSpec>& tools, const std::string& name);

// tool_choice {"type": "function", "function": {"name": N}}: the model's output IS the arguments, so it must
// follow N's parameters schema (vLLM).
nlohmann::ordered_json named_tool_schema(const ToolSpec& tool);

// tool_choice "required": vLLM's schema, a list (minItems 1; maxItems 1 without parallel_tool_calls) of
// anyOf one {"name": <enum [tool name]>, "parameters": <its schema>} per tool; the tools' "$defs" are hoisted
// to the root, so their "#/$defs/..." references still resolve.
nlohmann::ordered_json required_tools_schema(const std::vector<ToolSpec>& tools, bool parallel_tool_calls);

// The calls of a constrained output. Named: one call whose arguments are the output (re-serialized when it
// parses as JSON, verbatim otherwise, e.g. cut by max_tokens). Required: the list's items; nullopt when the
// output is not such a list (cut by max_tokens), which the reply shows as content.
ToolCall call_from_named_output(const std::string& name, std::string_view output);
std::optional<std::vector<ToolCall>> calls_from_required_output(std::string_view output);

}  // namespace lp::server
