#include "server/json_limits.h"

#include <nlohmann/json.hpp>

#include <vector>

#include "server/api_error.h"
#include "server/request_limits.h"

namespace lp::server {

namespace {

// Counts depth and keys; stops the parse (returns false) at the first limit broken or syntax error.
class ShapeChecker : public nlohmann::json_sax<nlohmann::json> {
 public:
  std::string error;  // why the parse stopped ("" = it did not)

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override {
    keys_.push_back(0);
    return enter();
  }
  bool key(string_t&) override {
    if (++keys_.back() > limits::kMaxJsonObjectKeys)
      return stop(
          fmt::format("a JSON object of the request body has more than {} keys", limits::kMaxJsonObjectKeys));
    if (++total_keys_ > limits::kMaxJsonTotalKeys)
      return stop(fmt::format("the request body has more than {} JSON keys", limits::kMaxJsonTotalKeys));
    comparisons_ += keys_.back() - 1;  // the ordered map's search before this insert
    if (comparisons_ > limits::kMaxJsonKeyComparisons)
      return stop(
          "the request body's JSON objects hold too many keys to parse (large objects; see the API limits)");
    return true;
  }
  bool end_object() override {
    keys_.pop_back();
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override { return enter(); }
  bool end_array() override {
    --depth_;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return stop("the request body is not valid JSON");
  }

 private:
  bool enter() {
    if (++depth_ > limits::kMaxJsonDepth)
      return stop(fmt::format("the request body is nested deeper than {} levels", limits::kMaxJsonDepth));
    return true;
  }
  bool stop(std::string why) {
    error = std::move(why);
    return false;
  }
  int depth_ = 0;
  size_t total_keys_ = 0;
  size_t comparisons_ = 0;
  std::vector<size_t> keys_;  // per open object
};

}  // namespace

void check_json_shape(std::string_view body) {
  ShapeChecker sax;
  const bool ok =
      nlohmann::json::sax_parse(body, &sax, nlohmann::json::input_format_t::json, /*strict=*/true);
  if (!ok || !sax.error.empty())
    throw ApiError(sax.error.empty() ? "the request body is not valid JSON" : sax.error, ErrorKind::kInvalid);
}

}  // namespace lp::server
