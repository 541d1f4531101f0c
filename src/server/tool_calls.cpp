#include "server/tool_calls.h"

#include "server/api_error.h"

namespace lp::server {

using ojson = nlohmann::ordered_json;
using Mode = ToolSetup::Mode;

ToolSetup setup_tools(const ojson& tools, const ToolChoice& choice, bool parallel_tool_calls,
                      const ToolFlags& flags) {
  std::vector<ToolSpec> specs = validate_tools(tools);
  ToolSetup s;
  s.parallel = parallel_tool_calls;
  if (specs.empty()) {
    // vLLM's wording. "auto" without tools is the default and means nothing.
    if (choice.kind == ToolChoice::Kind::kNamed || choice.kind == ToolChoice::Kind::kRequired)
      fail_param("tool_choice", "When using `tool_choice`, `tools` must be set.");
    return s;
  }
  switch (choice.kind) {
    case ToolChoice::Kind::kNone:
      break;  // the template still sees the tools; the text stays text
    case ToolChoice::Kind::kAuto: {
      auto parser = tool_parser_from_name(flags.tool_call_parser);
      if (!flags.enable_auto_tool_choice || !parser)
        fail_param(
            "tool_choice",
            "\"auto\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set");
      s.mode = Mode::kAuto;
      s.parser = *parser;
      break;
    }
    case ToolChoice::Kind::kNamed:
      s.mode = Mode::kNamed;
      s.name = choice.name;
      s.schema = named_tool_schema(find_tool(specs, choice.name));
      break;
    case ToolChoice::Kind::kRequired:
      s.mode = Mode::kRequired;
      s.schema = required_tools_schema(specs, parallel_tool_calls);
      break;
  }
  return s;
}

void constrain_tool_output(const ToolSetup& setup, StructuredOutput& structured) {
  if (setup.mode != Mode::kNamed && setup.mode != Mode::kRequired) return;
  // vLLM lets the tool schema win silently; a request asking for both gets told instead.
  if (structured.kind != StructuredOutput::Kind::kNone)
    fail_param("tool_choice",
               "tool_choice \"required\" or a named function constrains the output to the tool "
               "call; it can't be combined with '{}'",
               structured.param);
  structured = StructuredOutput{};
  structured.kind = StructuredOutput::Kind::kJsonSchema;
  structured.schema = setup.schema;
  structured.param = "tool_choice";
}

ChoiceTools::ChoiceTools(const ToolSetup& setup) : setup_(&setup) {
  if (setup.mode == Mode::kAuto) stream_.emplace(setup.parser);
}

// parallel_tool_calls false: the calls after the first are dropped (OpenAI's "at most one call"); the
// parser numbers calls from 0, so only index 0 is kept.
void ChoiceTools::keep_first_call(ToolStreamDelta& d) const {
  if (setup_->parallel) return;
  std::erase_if(d.calls, [](const ToolCallDelta& c) { return c.index > 0; });
}

ToolStreamDelta ChoiceTools::feed(std::string_view text) {
  ToolStreamDelta d;
  switch (setup_->mode) {
    case Mode::kNone:
      d.content = text;
      break;
    case Mode::kAuto:
      d = stream_->feed(text);
      keep_first_call(d);
      called_ = called_ || !d.calls.empty();
      break;
    case Mode::kNamed:
      // The output is the arguments: the call opens with the first text and grows with each delta.
      if (text.empty()) break;
      d.calls.push_back(named_started_
                            ? ToolCallDelta{0, "", "", std::string(text)}
                            : ToolCallDelta{0, make_tool_call_id(), setup_->name, std::string(text)});
      named_started_ = called_ = true;
      break;
    case Mode::kRequired:
      buffered_ += text;
      break;  // a list of calls is read once it is whole
  }
  return d;
}

ToolStreamDelta ChoiceTools::finish() {
  ToolStreamDelta d;
  switch (setup_->mode) {
    case Mode::kNone:
      break;
    case Mode::kAuto:
      d = stream_->finish();
      keep_first_call(d);
      called_ = called_ || !d.calls.empty();
      break;
    case Mode::kNamed:
      if (!named_started_) d.calls.push_back(ToolCallDelta{0, make_tool_call_id(), setup_->name, ""});
      named_started_ = called_ = true;
      break;
    case Mode::kRequired:
      if (auto calls = calls_from_required_output(buffered_)) {
        for (size_t k = 0; k < calls->size(); ++k) {
          ToolCall& c = (*calls)[k];
          d.calls.push_back(
              ToolCallDelta{static_cast<int>(k), std::move(c.id), std::move(c.name), std::move(c.arguments)});
        }
        called_ = true;
      } else {
        d.content = std::move(buffered_);  // not a list (cut by max_tokens): the client sees what came
      }
      buffered_.clear();
      break;
  }
  return d;
}

ToolStreamDelta ChoiceTools::step(std::string_view text, bool last) {
  ToolStreamDelta d = feed(text);
  if (last) {
    ToolStreamDelta f = finish();
    d.content += f.content;
    for (auto& c : f.calls) d.calls.push_back(std::move(c));
  }
  return d;
}

ExtractedToolCalls ChoiceTools::whole(std::string_view text) {
  ExtractedToolCalls r;
  switch (setup_->mode) {
    case Mode::kNone:
      r.content = text;
      break;
    case Mode::kAuto:
      r = extract_tool_calls(setup_->parser, text);
      if (!setup_->parallel && r.calls.size() > 1) r.calls.resize(1);
      break;
    case Mode::kNamed:
      r.calls.push_back(call_from_named_output(setup_->name, text));
      break;
    case Mode::kRequired:
      if (auto calls = calls_from_required_output(text))
        r.calls = std::move(*calls);
      else
        r.content = text;
      break;
  }
  called_ = !r.calls.empty();
  return r;
}

void apply_tool_calls(ojson& choice, const std::vector<ToolCall>& calls, bool finish_tool_calls) {
  if (!calls.empty()) {
    ojson& msg = choice["message"];
    if (auto c = msg.find("content");
        c != msg.end() && c->is_string() && c->get_ref<const std::string&>().empty())
      *c = nullptr;
    ojson arr = ojson::array();
    for (const auto& c : calls)
      arr.push_back(
          {{"id", c.id}, {"type", "function"}, {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
    msg["tool_calls"] = std::move(arr);
  }
  if (finish_tool_calls) choice["finish_reason"] = "tool_calls";
}

void add_tool_call_deltas(ojson& chunk, const std::vector<ToolCallDelta>& calls) {
  if (calls.empty()) return;
  ojson arr = ojson::array();
  for (const auto& c : calls) {
    ojson j;
    j["index"] = c.index;
    if (!c.id.empty()) {
      j["id"] = c.id;
      j["type"] = "function";
      j["function"] = {{"name", c.name}, {"arguments", c.arguments}};
    } else {
      j["function"] = {{"arguments", c.arguments}};
    }
    arr.push_back(std::move(j));
  }
  chunk["choices"][0]["delta"]["tool_calls"] = std::move(arr);
}

void set_finish_tool_calls(ojson& chunk) {
  chunk["choices"][0]["finish_reason"] = "tool_calls";
}

}  // namespace lp::server
