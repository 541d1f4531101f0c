// vLLM's request fields (issue 15, item 1): each implemented field parsed with its types and ranges, each
// known-but-unimplemented field refused with a 400 naming it, structured outputs / tool_choice parsed into
// their specs, the engine-request mapping, prompt truncation, bad-word tokenization and the response shapes
// (stop_reason, prompt_logprobs, echo logprobs).
#include <gtest/gtest.h>

#include "server/api_error.h"
#include "server/openai_request.h"
#include "server/openai_response.h"
#include "text/chat_prompt.h"
#include "util/openai_util.h"

namespace lp::server {
namespace {

using ojson = nlohmann::ordered_json;
using test::refused_param;

CompletionRequest cmpl(const std::string& extra) {
  return parse_completion_request(parse_body(R"({"prompt":"x")" + extra + "}"));
}
ChatRequest chat(const std::string& extra, const std::string& messages = R"([{"role":"user","content":"hi"}])") {
  return parse_chat_request(parse_body(R"({"messages":)" + messages + extra + "}"));
}
std::string chat_refused(const std::string& extra, const std::string& messages = R"([{"role":"user","content":"hi"}])") {
  return refused_param(R"({"messages":)" + messages + extra + "}", true);
}

TEST(VllmFields, SamplingExtrasParsed) {
  auto r = cmpl(R"(,"min_tokens":5,"allowed_token_ids":[9,3,3,7],"bad_words":["foo"," bar"],"prompt_logprobs":2,
                    "truncate_prompt_tokens":-1,"echo":true)");
  EXPECT_EQ(r.min_tokens, 5);
  EXPECT_EQ(*r.allowed_token_ids, (std::vector<int32_t>{3, 7, 9}));  // sorted, unique
  EXPECT_EQ(r.bad_words, (std::vector<std::string>{"foo", " bar"}));
  EXPECT_EQ(r.prompt_logprobs, 2);
  EXPECT_EQ(*r.truncate_prompt_tokens, -1);
  EXPECT_TRUE(r.echo);
  auto d = cmpl("");
  EXPECT_EQ(d.min_tokens, 0);
  EXPECT_FALSE(d.allowed_token_ids);
  EXPECT_TRUE(d.bad_words.empty());
  EXPECT_EQ(d.prompt_logprobs, -1);
  EXPECT_FALSE(d.truncate_prompt_tokens);
  EXPECT_FALSE(d.echo);
  EXPECT_TRUE(d.add_special_tokens);
  EXPECT_FALSE(d.return_tokens_as_token_ids);
  EXPECT_TRUE(cmpl(R"(,"return_tokens_as_token_ids":true,"spaces_between_special_tokens":false)")
                  .return_tokens_as_token_ids);
  EXPECT_EQ(refused_param(R"({"prompt":"x","return_tokens_as_token_ids":1})"), "return_tokens_as_token_ids");
  EXPECT_EQ(refused_param(R"({"prompt":"x","spaces_between_special_tokens":"no"})"),
            "spaces_between_special_tokens");
  EXPECT_FALSE(cmpl(R"(,"add_special_tokens":false)").add_special_tokens);
  // Chat takes the same extras.
  auto c = chat(R"(,"min_tokens":2,"prompt_logprobs":0,"bad_words":["x"])");
  EXPECT_EQ(c.min_tokens, 2);
  EXPECT_EQ(c.prompt_logprobs, 0);
  EXPECT_EQ(c.bad_words.size(), 1u);
}

TEST(VllmFields, SamplingExtrasRangesAndTypes) {
  struct Case {
    const char* extra;
    const char* param;
  } cases[] = {
      {R"(,"min_tokens":-1)", "min_tokens"},
      {R"(,"min_tokens":"5")", "min_tokens"},
      {R"(,"allowed_token_ids":[])", "allowed_token_ids"},
      {R"(,"allowed_token_ids":[-1])", "allowed_token_ids"},
      {R"(,"allowed_token_ids":5)", "allowed_token_ids"},
      {R"(,"bad_words":"foo")", "bad_words"},
      {R"(,"bad_words":[1])", "bad_words"},
      {R"(,"bad_words":["  "])", "bad_words"},
      {R"(,"prompt_logprobs":-1)", "prompt_logprobs"},
      {R"(,"prompt_logprobs":21)", "prompt_logprobs"},
      {R"(,"prompt_logprobs":1,"stream":true)", "prompt_logprobs"},
      {R"(,"truncate_prompt_tokens":0)", "truncate_prompt_tokens"},
      {R"(,"truncate_prompt_tokens":-2)", "truncate_prompt_tokens"},
      {R"(,"echo":"yes")", "echo"},
      {R"(,"max_tokens":0)", "max_tokens"},  // 0 only with echo
  };
  for (const auto& c : cases)
    EXPECT_EQ(refused_param(std::string(R"({"prompt":"x")") + c.extra + "}"), c.param) << c.extra;
  EXPECT_EQ(refused_param(R"({"prompt":"x","prompt_logprobs":0,"stream":true})"),
            "");  // as vLLM: only > 0 is refused
  EXPECT_EQ(refused_param(R"({"prompt":"x","prompt_logprobs":20})"), "");
  EXPECT_EQ(refused_param(R"({"prompt":"x","echo":true,"max_tokens":0})"), "");
  EXPECT_EQ(chat_refused(R"(,"echo":true,"max_tokens":0)"), "max_tokens");
  std::string many = R"({"prompt":"x","bad_words":[)";
  for (size_t i = 0; i <= limits::kMaxBadWords; ++i) many += (i ? ",\"w" : "\"w") + std::to_string(i) + "\"";
  EXPECT_EQ(refused_param(many + "]}"), "bad_words");
  EXPECT_EQ(refused_param(R"({"prompt":"x","bad_words":[")" + std::string(limits::kMaxBadWordBytes + 1, 'a') +
                          "\"]}"),
            "bad_words");
}

TEST(VllmFields, StreamOptionsAsVllm) {
  auto d = cmpl(R"(,"stream":true,"stream_options":{})");
  EXPECT_TRUE(d.include_usage);  // StreamOptions.include_usage defaults to true in vLLM
  EXPECT_FALSE(d.continuous_usage);
  auto c = cmpl(R"(,"stream":true,"stream_options":{"continuous_usage_stats":true})");
  EXPECT_TRUE(c.include_usage && c.continuous_usage);
  EXPECT_FALSE(cmpl(R"(,"stream":true,"stream_options":{"include_usage":false,"continuous_usage_stats":true})")
                   .continuous_usage);
  EXPECT_FALSE(cmpl(R"(,"stream":true)").include_usage);
  EXPECT_EQ(refused_param(R"({"prompt":"x","stream":true,"stream_options":{"continuous_usage_stats":1}})"),
            "stream_options.continuous_usage_stats");
}

TEST(VllmFields, EchoWithLogprobsAsksForPromptLogprobs) {
  EXPECT_EQ(cmpl(R"(,"echo":true,"logprobs":3)").prompt_logprobs, 3);
  EXPECT_EQ(cmpl(R"(,"echo":true,"logprobs":3,"prompt_logprobs":1)").prompt_logprobs, 1);
  EXPECT_EQ(cmpl(R"(,"logprobs":3)").prompt_logprobs, -1);
}

TEST(VllmFields, ListOfPrompts) {
  auto r = parse_completion_request(parse_body(R"({"prompt":["a","bb","ccc"],"n":2})"));
  ASSERT_EQ(r.prompts.size(), 3u);
  EXPECT_EQ(*r.prompts[2].text, "ccc");
  auto ids = parse_completion_request(parse_body(R"({"prompt":[[1,2],[3]]})"));
  ASSERT_EQ(ids.prompts.size(), 2u);
  EXPECT_FALSE(ids.prompts[1].text);
  EXPECT_EQ(ids.prompts[1].ids, (std::vector<int32_t>{3}));
  EXPECT_EQ(refused_param(R"({"prompt":["a",""]})"), "prompt");
  EXPECT_EQ(refused_param(R"({"prompt":[[1],[]]})"), "prompt");
  EXPECT_EQ(refused_param(R"({"prompt":[[1],"a"]})"), "prompt");
  EXPECT_EQ(refused_param(R"({"prompt":[{"a":1}]})"), "prompt");
  // prompts * n is bounded like n alone.
  std::string body = R"({"n":2,"prompt":[)";
  for (int i = 0; i < limits::kMaxChoices / 2 + 1; ++i) body += i ? ",\"p\"" : "\"p\"";
  EXPECT_EQ(refused_param(body + "]}"), "prompt");
}

TEST(VllmFields, KnownButUnimplementedFieldsAre400NamingThem) {
  struct Case {
    const char* extra;
    const char* param;
  } cases[] = {
      {R"(,"use_beam_search":true)", "use_beam_search"},
      {R"(,"length_penalty":0.5)", "length_penalty"},
      {R"(,"logits_processors":["my.proc"])", "logits_processors"},
      {R"(,"return_token_ids":true)", "return_token_ids"},
      {R"(,"priority":1)", "priority"},
      {R"(,"mm_processor_kwargs":{"a":1})", "mm_processor_kwargs"},
      {R"(,"media_io_kwargs":{"a":1})", "media_io_kwargs"},
      {R"(,"kv_transfer_params":{})", "kv_transfer_params"},
      {R"(,"vllm_xargs":{"k":1})", "vllm_xargs"},
      {R"(,"guided_grammar":"root ::= \"a\"")", "guided_grammar"},
      {R"(,"structural_tag":"{}")", "structural_tag"},
      {R"(,"guided_whitespace_pattern":" *")", "guided_whitespace_pattern"},
      {R"(,"structured_outputs":{"grammar":"root ::= x"})", "structured_outputs.grammar"},
      {R"(,"structured_outputs":{"structural_tag":"{}"})", "structured_outputs.structural_tag"},
      {R"(,"structured_outputs":{"regex":"a","disable_any_whitespace":true})",
       "structured_outputs.disable_any_whitespace"},
      {R"(,"response_format":{"type":"structural_tag"})", "response_format"},
      {R"(,"cache_salt":"")", "cache_salt"},
      {R"(,"user":5)", "user"},
      {R"(,"suffix":"tail")", "suffix"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(refused_param(std::string(R"({"prompt":"x")") + c.extra + "}"), c.param) << c.extra;
    if (std::string(c.param) != "suffix") {
      EXPECT_EQ(chat_refused(c.extra), c.param) << "chat " << c.extra;
    }
  }
  EXPECT_EQ(refused_param(R"({"prompt":"x","prompt_embeds":"AAAA"})"), "prompt_embeds");
  try {
    cmpl(R"(,"use_beam_search":true)");
    ADD_FAILURE() << "use_beam_search accepted";
  } catch (const ApiError& e) {
    EXPECT_NE(std::string(e.what()).find("use_beam_search"), std::string::npos) << e.what();
  }
  // Their defaults, and the fields that change nothing, are accepted.
  EXPECT_EQ(
      refused_param(R"({"prompt":"x","use_beam_search":false,"length_penalty":1.0,"logits_processors":[],
                       "return_tokens_as_token_ids":false,"spaces_between_special_tokens":true,"priority":0,
                       "mm_processor_kwargs":{},"vllm_xargs":{},"user":"u","request_id":"r","cache_salt":"s",
                       "guided_decoding_backend":"xgrammar","prompt_embeds":null,"kv_transfer_params":null,
                       "stream":true,"stream_options":{"continuous_usage_stats":false}})"),
      "");
  EXPECT_EQ(refused_param(R"({"prompt":"x","some_unknown_extra":{"deep":[1,2]}})"),
            "");  // truly unknown: ignored
}

TEST(VllmFields, StructuredOutputsParsedIntoTheirSpec) {
  using K = StructuredOutput::Kind;
  auto js = cmpl(R"(,"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}})");
  EXPECT_EQ(js.structured.kind, K::kJsonSchema);
  EXPECT_EQ(js.structured.schema, nlohmann::ordered_json::parse(R"({"type":"object"})"));
  EXPECT_EQ(js.structured.param, "response_format");
  EXPECT_EQ(cmpl(R"(,"response_format":{"type":"json_object"})").structured.kind, K::kJsonObject);
  EXPECT_EQ(cmpl(R"(,"response_format":{"type":"text"})").structured.kind, K::kNone);
  auto gj = cmpl(R"(,"guided_json":"{\"type\":\"integer\"}")");
  EXPECT_EQ(gj.structured.kind, K::kJsonSchema);
  EXPECT_EQ(gj.structured.schema["type"], "integer");
  EXPECT_EQ(gj.structured.param, "guided_json");
  auto re = chat(R"(,"structured_outputs":{"regex":"[a-z]+"})");
  EXPECT_EQ(re.structured.kind, K::kRegex);
  EXPECT_EQ(re.structured.regex, "[a-z]+");
  EXPECT_EQ(re.structured.param, "structured_outputs.regex");
  auto ch = cmpl(R"(,"guided_choice":["yes","no"])");
  EXPECT_EQ(ch.structured.kind, K::kChoice);
  EXPECT_EQ(ch.structured.choice, (std::vector<std::string>{"yes", "no"}));
  EXPECT_EQ(cmpl(R"(,"structured_outputs":{"json_object":true})").structured.kind, K::kJsonObject);
  EXPECT_EQ(cmpl(R"(,"structured_outputs":{"json":{"type":"string"}})").structured.kind, K::kJsonSchema);
  // Two kinds at once, and malformed specs.
  EXPECT_EQ(refused_param(R"({"prompt":"x","guided_regex":"a","guided_choice":["a"]})"), "guided_choice");
  EXPECT_EQ(refused_param(R"({"prompt":"x","response_format":{"type":"json_object"},"guided_regex":"a"})"),
            "guided_regex");
  EXPECT_EQ(refused_param(R"({"prompt":"x","guided_choice":[]})"), "guided_choice");
  EXPECT_EQ(refused_param(R"({"prompt":"x","guided_json":"{not json"})"), "guided_json");
  EXPECT_EQ(refused_param(R"({"prompt":"x","response_format":{"type":"json_schema"}})"), "response_format");
  EXPECT_EQ(refused_param(R"({"prompt":"x","response_format":{"type":"xml"}})"), "response_format");
  EXPECT_EQ(refused_param(R"({"prompt":"x","response_format":"json"})"), "response_format");
}

TEST(VllmFields, ToolChoice) {
  using K = ToolChoice::Kind;
  const std::string tools = R"(,"tools":[{"type":"function","function":{"name":"get_weather"}}])";
  EXPECT_EQ(chat("").tool_choice.kind, K::kNone);
  EXPECT_EQ(chat(tools).tool_choice.kind, K::kAuto);  // tools without tool_choice: auto
  EXPECT_EQ(chat(tools + R"(,"tool_choice":"none")").tool_choice.kind, K::kNone);
  EXPECT_EQ(chat(tools + R"(,"tool_choice":"required")").tool_choice.kind, K::kRequired);
  auto named = chat(tools + R"(,"tool_choice":{"type":"function","function":{"name":"get_weather"}})");
  EXPECT_EQ(named.tool_choice.kind, K::kNamed);
  EXPECT_EQ(named.tool_choice.name, "get_weather");
  EXPECT_EQ(chat(R"(,"tools":[],"tool_choice":"required")").tool_choice.kind, K::kNone);  // as OpenAI
  EXPECT_TRUE(chat(tools).parallel_tool_calls);
  EXPECT_FALSE(chat(tools + R"(,"parallel_tool_calls":false)").parallel_tool_calls);
  EXPECT_EQ(chat_refused(R"(,"tool_choice":"auto")"), "tool_choice");  // no tools
  EXPECT_EQ(chat_refused(tools + R"(,"tool_choice":"sometimes")"), "tool_choice");
  EXPECT_EQ(chat_refused(tools + R"(,"tool_choice":{"type":"function","function":{"name":"other"}})"), "tool_choice");
  EXPECT_EQ(chat_refused(tools + R"(,"tool_choice":{"type":"function"})"), "tool_choice");
  EXPECT_EQ(chat_refused(tools + R"(,"parallel_tool_calls":"no")"), "parallel_tool_calls");
}

TEST(VllmFields, ChatOnlyFields) {
  const std::string open = R"([{"role":"user","content":"hi"},{"role":"assistant","content":"Once upon"}])";
  auto r = chat(R"(,"continue_final_message":true)", open);
  EXPECT_TRUE(r.continue_final_message);
  EXPECT_FALSE(r.add_generation_prompt);  // implied
  EXPECT_EQ(chat_refused(R"(,"continue_final_message":true,"add_generation_prompt":true)", open),
            "continue_final_message");
  EXPECT_EQ(refused_param(
                R"({"messages":)" + open + R"(,"continue_final_message":true,"add_generation_prompt":false})",
                true),
            "");
  EXPECT_EQ(chat_refused(R"(,"continue_final_message":true)"), "continue_final_message");  // last is a user's
  EXPECT_EQ(*chat(R"(,"chat_template":"{{ messages[0].content }}")").chat_template, "{{ messages[0].content }}");
  EXPECT_EQ(chat_refused(R"(,"chat_template":7)"), "chat_template");
  auto docs = chat(R"(,"documents":[{"title":"t","text":"x"}],"reasoning_effort":"low")");
  EXPECT_EQ(docs.chat_template_kwargs["documents"][0]["title"], "t");
  EXPECT_EQ(docs.chat_template_kwargs["reasoning_effort"], "low");
  EXPECT_EQ(chat_refused(R"(,"documents":["t"])"), "documents");
  EXPECT_EQ(chat_refused(R"(,"reasoning_effort":"max")"), "reasoning_effort");
  EXPECT_TRUE(chat(R"(,"echo":true)").echo);
}

TEST(VllmFields, EngineRequestMapping) {
  GenerateParams p;
  p.n = 2;
  p.min_tokens = 3;
  p.allowed_token_ids = std::vector<int32_t>{4, 8};
  p.prompt_logprobs = 1;
  auto bad = std::make_shared<const std::vector<std::vector<int32_t>>>(std::vector<std::vector<int32_t>>{{5, 6}});
  auto reqs = make_engine_requests(p, {1, 2, 3}, "", 100, 16, bad);
  ASSERT_EQ(reqs.size(), 2u);
  for (const auto& r : reqs) {
    EXPECT_EQ(r.min_tokens, 3);
    ASSERT_TRUE(r.allowed_token_ids);
    EXPECT_EQ(*r.allowed_token_ids, (std::vector<int32_t>{4, 8}));
    EXPECT_EQ(r.bad_words, bad);
    EXPECT_EQ(r.prompt_logprobs, 1);
  }
  // min_tokens above the (explicit or default) max_tokens.
  p.min_tokens = 17;
  try {
    make_engine_requests(p, {1}, "", 100, 16);
    ADD_FAILURE() << "min_tokens 17 > default max_tokens 16 accepted";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.param(), "min_tokens");
  }
  p.max_tokens = 17;
  EXPECT_EQ(make_engine_requests(p, {1}, "", 100, 16)[0].max_tokens, 17);
  // echo with max_tokens 0 generates one token (dropped by the handler).
  GenerateParams e;
  e.echo = true;
  e.max_tokens = 0;
  EXPECT_EQ(make_engine_requests(e, {1, 2}, "", 100, 16)[0].max_tokens, 1);
}

TEST(VllmFields, TruncatePromptKeepsTheLastTokens) {
  GenerateParams p;
  std::vector<int32_t> prompt{1, 2, 3, 4, 5};
  truncate_prompt(p, prompt, 100);  // unset: unchanged
  EXPECT_EQ(prompt.size(), 5u);
  p.truncate_prompt_tokens = 2;
  truncate_prompt(p, prompt, 100);
  EXPECT_EQ(prompt, (std::vector<int32_t>{4, 5}));
  p.truncate_prompt_tokens = -1;  // max_model_len
  std::vector<int32_t> longer{1, 2, 3, 4, 5, 6};
  truncate_prompt(p, longer, 4);
  EXPECT_EQ(longer, (std::vector<int32_t>{3, 4, 5, 6}));
  p.truncate_prompt_tokens = 5;
  std::vector<int32_t> shorter{7};
  truncate_prompt(p, shorter, 100);
  EXPECT_EQ(shorter, (std::vector<int32_t>{7}));
  try {
    truncate_prompt(p, shorter, 4);
    ADD_FAILURE() << "truncate_prompt_tokens 5 > max_model_len 4 accepted";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.param(), "truncate_prompt_tokens");
  }
}

TEST(VllmFields, BadWordsAsVllmTokenizesThem) {
  // A toy tokenizer: one id per byte, except that " x" at the start is one token (1000 + x), as BPE
  // vocabularies merge a word's leading space.
  auto encode = [](const std::string& s) {
    std::vector<int32_t> ids;
    size_t i = 0;
    if (s.size() >= 2 && s[0] == ' ' && s[1] != ' ') {
      ids.push_back(1000 + s[1]);
      i = 2;
    }
    for (; i < s.size(); ++i) ids.push_back(static_cast<unsigned char>(s[i]));
    return ids;
  };
  auto seqs = bad_words_token_ids({"ab", "  cd"}, encode);
  ASSERT_TRUE(seqs);
  // "ab" -> [a b] and " ab" -> [1000+a, b]; "  cd" is left-stripped first.
  std::vector<std::vector<int32_t>> want{{'a', 'b'}, {1000 + 'a', 'b'}, {'c', 'd'}, {1000 + 'c', 'd'}};
  EXPECT_EQ(*seqs, want);
  // The spaced form is dropped when its length differs (a tokenizer where the space is its own token).
  auto split_space = [](const std::string& s) {
    std::vector<int32_t> ids;
    for (unsigned char c : s) ids.push_back(c);
    return ids;
  };
  EXPECT_EQ(*bad_words_token_ids({"ab"}, split_space), (std::vector<std::vector<int32_t>>{{'a', 'b'}}));
  EXPECT_FALSE(bad_words_token_ids({}, split_space));
}

TEST(VllmResponse, StopReasonAndPromptLogprobsShapes) {
  EXPECT_TRUE(stop_reason_json({}).is_null());
  EXPECT_EQ(stop_reason_json(std::string("END")), "END");
  EXPECT_EQ(stop_reason_json(int32_t{7}), 7);
  auto text = [](int32_t id) { return "t" + std::to_string(id); };
  std::vector<std::optional<sched::TokenLogprob>> plp;
  plp.emplace_back(std::nullopt);
  plp.emplace_back(sched::TokenLogprob{11, -0.5f, {{12, -0.25f}, {11, -0.5f}}, 0});  // rank from the top list
  plp.emplace_back(sched::TokenLogprob{13, -3.0f, {{14, -0.1f}}, 9});                // rank from the engine
  plp.emplace_back(sched::TokenLogprob{15, -4.0f, {}, 0});                           // unknown rank
  ojson j = prompt_logprobs_json({10, 11, 13, 15}, plp, text);
  ASSERT_EQ(j.size(), 4u);
  EXPECT_TRUE(j[0].is_null());
  EXPECT_EQ(j[1]["11"], (ojson{{"logprob", -0.5}, {"rank", 2}, {"decoded_token", "t11"}}));
  EXPECT_EQ(j[1]["12"], (ojson{{"logprob", -0.25}, {"rank", 1}, {"decoded_token", "t12"}}));
  EXPECT_EQ(j[1].size(), 2u);
  EXPECT_EQ(j[1].begin().key(), "11");  // the prompt token first
  EXPECT_EQ(j[2]["13"]["rank"], 9);
  EXPECT_EQ(j[2]["14"]["rank"], 1);
  EXPECT_TRUE(j[3]["15"]["rank"].is_null());

  // Echo logprobs: the first entry null in token_logprobs and top_logprobs, offsets continue.
  CompletionLogprobState st;
  std::vector<sched::TokenLogprob> lps{{10, 0, {}, 0}, {11, -0.5f, {}, 0}};
  ojson c = completion_logprobs(lps, text, st, 1);
  EXPECT_EQ(c["tokens"], (ojson{"t10", "t11"}));
  EXPECT_TRUE(c["token_logprobs"][0].is_null());
  EXPECT_EQ(c["token_logprobs"][1], -0.5);
  EXPECT_TRUE(c["top_logprobs"][0].is_null());
  EXPECT_EQ(c["text_offset"], (ojson{0, 3}));

  ResponseMeta cm{Api::kCompletion, "cmpl-1", 5, "m"};
  std::vector<ChoiceResult> choices(1);
  choices[0].text = "x";
  choices[0].finish = sched::FinishReason::kStop;
  choices[0].stop_reason = std::string("END");
  ojson full = full_response(cm, choices, 1, -1, text);
  EXPECT_EQ(full["choices"][0]["stop_reason"], "END");
  EXPECT_TRUE(full["choices"][0]["prompt_logprobs"].is_null());
  ResponseMeta ch{Api::kChat, "chatcmpl-1", 5, "m"};
  choices[0].stop_reason = int32_t{2};
  choices[0].prompt_logprobs = j;
  ojson fc = full_response(ch, choices, 1, -1, text);
  EXPECT_EQ(fc["choices"][0]["stop_reason"], 2);
  EXPECT_EQ(fc["prompt_logprobs"], j);  // top-level for chat
  EXPECT_FALSE(fc["choices"][0].contains("prompt_logprobs"));
  ojson chunk = stream_chunk(cm, 3, "a", false, nullptr, sched::FinishReason::kNone, false);
  EXPECT_TRUE(chunk["choices"][0]["stop_reason"].is_null());
  ojson fin = stream_chunk(cm, 3, "", false, nullptr, sched::FinishReason::kStop, false, "END");
  EXPECT_EQ(fin["choices"][0]["stop_reason"], "END");
}

TEST(ContinueFinalMessage, CutsAfterTheLastOccurrence) {
  const std::string rendered = "<u>Once</u><a>Once upon</a>\n";
  EXPECT_EQ(rendered.substr(0, text::continue_final_message_end(rendered, "Once upon")), "<u>Once</u><a>Once upon");
  // A template that strips the content: the stripped form is found.
  EXPECT_EQ(rendered.substr(0, text::continue_final_message_end(rendered, " Once upon \n")),
            "<u>Once</u><a>Once upon");
  EXPECT_THROW(text::continue_final_message_end(rendered, "never written"), Error);
}

}  // namespace
}  // namespace lp::server
