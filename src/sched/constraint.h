// A per-request restriction on which tokens may come next: structured outputs (a JSON schema, a regex, a
// choice) compile to one (src/constrain/). The engine sees only this interface, so the scheduler and the
// sampler don't know grammars exist. Every call happens on the engine thread.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

namespace lp::sched {

class TokenConstraint {
 public:
  virtual ~TokenConstraint() = default;
  // Sets to -inf the logit of every token that can't come next. The ids in `eos` end the request: they stay
  // allowed only where the output may end (and are the only tokens allowed once it is complete). Returns
  // false when no token at all is allowed (the engine then ends the request with an error).
  virtual bool mask(std::span<float> logits, std::span<const int32_t> eos) = 0;
  // Advances past `token`, one that mask() allowed (EOS included).
  virtual void accept(int32_t token) = 0;
  // The output is complete: nothing may follow but EOS.
  virtual bool complete() const = 0;
};

// Starts one TokenConstraint per request; the n choices of one call share a factory (and its caches).
class ConstraintFactory {
 public:
  virtual ~ConstraintFactory() = default;
  virtual std::unique_ptr<TokenConstraint> start() const = 0;
};

}  // namespace lp::sched
