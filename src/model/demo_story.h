// The story demo model (`loraplex demo-model OUT --shape story`): weights constructed, not trained, so that
// greedy decoding recites a built-in passage word by word, and a rank-1 LoRA per adapter switches it to
// that adapter's own passage (French support reply, code review, medical advice, legal summary). It shows
// what multi-LoRA serving means with a model small enough to build in milliseconds.
//
// How it works (hidden 512, 2 layers, attention off): every passage is a chain of word-level tokens (the
// tokenizer's added tokens), each distinct within its passage, so "current token + passage" fixes the next
// token. The residual stream holds one-hot dims: a constant bias, the current token ("cur"), the passage
// mode (one per adapter; none for the base), and the predicted token ("next"). Layer 0's MLP has one
// always-on neuron whose down_proj row is zero; an adapter's LoRA B writes that neuron into its mode dim.
// Layer 1's MLP has one neuron per (token, passage) that fires only for that token in that mode and writes
// the successor's "next" dim, plus a start neuron per passage that fires when the current token is not in
// the passage (any other prompt) and writes the passage's first token; lm_head reads the "next" dims, and a
// passage's last token predicts EOS. Thresholds sit on the bias dim, so RMSNorm's scale never moves them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "model/demo_model.h"
#include "model/weights.h"

namespace lp::model {

struct StoryPassage {
  std::string adapter;                // "" for the base model's passage, else the adapter's name
  std::vector<std::string> segments;  // its tokens in order; the passage's text is their concatenation
};

// The base model's English story first, then the adapters' passages: medical-qa, legal-summary,
// code-review, french-support.
const std::vector<StoryPassage>& story_passages();
// Every distinct segment, in order of first use: the story tokenizer's added tokens.
std::vector<std::string> story_tokens();

// The ids the model is built for: tokens[i] is the id of story_tokens()[i] in the written tokenizer; eos is
// what the end of a passage predicts.
struct StoryIds {
  std::vector<int32_t> tokens;
  int32_t eos = -1;
};

// Writes config.json (demo_config_json with shape "story") and model.safetensors into dir. Uses spec's
// dtype, bos_ids and eos_ids; the story model is a plain llama (no arch, bias or quantization options).
void write_story_model(const std::filesystem::path& dir, const DemoSpec& spec, const StoryIds& ids);

// The LoRA of passage `passage` (1.. in story_passages()): rank 1 on one projection; scale 1 (alpha = r).
struct StoryLora {
  int layer = 0;
  Proj proj = Proj::kDown;
  std::vector<float> a;  // (1, in): reads layer 0's always-on neuron
  std::vector<float> b;  // (out, 1): writes the passage's mode dim
};
StoryLora story_lora(const ModelConfig& c, size_t passage);

}  // namespace lp::model
