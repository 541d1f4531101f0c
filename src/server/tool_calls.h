// How a chat request's `tools` and `tool_choice` shape its reply, as vLLM does it: "none" leaves the text
// alone, "auto" reads calls out of the text with the server's --tool-call-parser, and a named function or
// "required" constrain the output (the schema is here; the handler turns it into the engine's constraint) and
// read the calls out of that output. Per choice, ChoiceTools follows the text (whole or streamed) and patches
// the reply JSON that openai_response.h built: message.tool_calls, delta.tool_calls, finish_reason.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "server/openai_request.h"
#include "server/tool_parser.h"

namespace lp::server {

struct ToolSetup {
  enum class Mode { kNone, kAuto, kNamed, kRequired };
  Mode mode = Mode::kNone;
  ToolParserKind parser = ToolParserKind::kHermes;  // kAuto
  std::string name;                                 // kNamed: the function
  nlohmann::ordered_json schema;                    // kNamed / kRequired: what the output must follow
  bool parallel = true;  // parallel_tool_calls: false keeps only the first call (kRequired: also the schema)
};

// The server's tool flags: --enable-auto-tool-choice, --tool-call-parser NAME ("" = none).
struct ToolFlags {
  bool enable_auto_tool_choice = false;
  std::string tool_call_parser;
};

// vLLM's rules: without tools, tool_choice "auto"/"none" mean nothing and a named or "required" choice is a
// 400; with tools, "auto" needs both server flags (else 400), a named function must be one of `tools` (else
// 400). `tools` is validated (validate_tools: 400s naming e.g. "tools[1].function.name").
ToolSetup setup_tools(const nlohmann::ordered_json& tools, const ToolChoice& choice, bool parallel_tool_calls,
                      const ToolFlags& flags);

// kNamed / kRequired: the output must follow setup.schema, so `structured` becomes that JSON schema (param
// "tool_choice"); ApiError(kInvalid) when the request already asks for another structured output.
void constrain_tool_output(const ToolSetup& setup, StructuredOutput& structured);

// The tool-call state of one choice.
class ChoiceTools {
 public:
  explicit ChoiceTools(const ToolSetup& setup);

  // Streaming: each text delta in, what the client gets out (content and tool-call deltas); finish() at the
  // end.
  ToolStreamDelta feed(std::string_view text);
  ToolStreamDelta finish();
  // feed(text), and when `last` finish() too, in one delta.
  ToolStreamDelta step(std::string_view text, bool last);
  // Non-streaming: the whole text.
  ExtractedToolCalls whole(std::string_view text);

  // finish_reason "tool_calls": calls were made in auto or required mode (vLLM; a named function: "stop").
  bool finish_as_tool_calls() const { return called_ && (setup_->mode != ToolSetup::Mode::kNamed); }

 private:
  void keep_first_call(ToolStreamDelta& d) const;

  const ToolSetup* setup_;                // the call's; outlives every choice
  std::optional<ToolCallStream> stream_;  // kAuto
  std::string buffered_;                  // kRequired: the list is read at the end
  bool named_started_ = false;
  bool called_ = false;
};

// The non-streaming chat choice (as full_response built it) with its calls: message.content null when empty,
// message.tool_calls [{"id", "type": "function", "function": {"name", "arguments"}}], finish_reason
// "tool_calls" when `finish_tool_calls`.
void apply_tool_calls(nlohmann::ordered_json& choice, const std::vector<ToolCall>& calls,
                      bool finish_tool_calls);

// The streaming chunk (as stream_chunk built it) with delta.tool_calls: a call's first delta {"index", "id",
// "type": "function", "function": {"name", "arguments"}}, later ones {"index", "function": {"arguments"}}.
void add_tool_call_deltas(nlohmann::ordered_json& chunk, const std::vector<ToolCallDelta>& calls);
// The chunk's finish_reason becomes "tool_calls".
void set_finish_tool_calls(nlohmann::ordered_json& chunk);

}  // namespace lp::server
