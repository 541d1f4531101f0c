// Unit tests of the Jinja interpreter that need no node: pinned renderings of the main features, the
// sandbox, and hostile templates that must fail with lp::Error quickly instead of hanging or crashing.
// (Byte-identity with @huggingface/jinja is checked by jinja_reference_test.cpp.)
#include <gtest/gtest.h>

#include "util/test_util.h"

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "core/check.h"
#include "text/jinja/js_string.h"
#include "text/jinja/lexer.h"
#include "text/jinja/template.h"

namespace lp::text::jinja {
namespace {

using json = nlohmann::ordered_json;

std::string render(const std::string& tpl, const json& vars = json::object(), TemplateOptions opt = {}) {
  return Template(tpl, std::move(opt)).render(vars);
}

// Runs a template that must fail; returns the error message and checks it failed within 3 seconds.
std::string render_error(const std::string& tpl, const json& vars = json::object()) {
  const auto t0 = std::chrono::steady_clock::now();
  std::string msg;
  try {
    render(tpl, vars);
    ADD_FAILURE() << "expected lp::Error from: " << tpl.substr(0, 200);
  } catch (const Error& e) {
    msg = e.what();
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(s, 3.0 * test::time_scale()) << "took " << s << " s: " << tpl.substr(0, 200);
  return msg;
}

TEST(Jinja, expressions_follow_huggingface_jinja_semantics) {
  EXPECT_EQ(render("{{ 1 + 2 * 3 }}|{{ 7 // 2 }}|{{ 7 / 2 }}|{{ 2 ** 10 }}|{{ 1.0 }}|{{ -7 % 3 }}"),
            "7|3|3.5|1024|1.0|-1");
  EXPECT_EQ(render("{{ 'a' ~ 1 ~ 2.0 }}|{{ 'a' + 'b' }}|{{ true }}|{{ none }}|{{ [1, 'x', none] }}"),
            "a12|ab|true||[1, \"x\", null]");
  EXPECT_EQ(render("{{ 'y' if x else 'n' }}{{ 'b' in 'abc' }}{{ 3 not in [1] }}{{ not [] }}", {{"x", 0}}),
            "ntruetruetrue");
  EXPECT_EQ(render("{{ s[::-1] }}|{{ l[1:] }}|{{ l[-1] }}|{{ s[0] }}", {{"s", "abc"}, {"l", {1, 2, 3}}}),
            "cba|[2, 3]|3|a");
  EXPECT_EQ(render("{{ m.missing }}|{{ m.missing.deeper }}|{{ m['role'] }}", {{"m", {{"role", "user"}}}}),
            "||user");
}

TEST(Jinja, filters_and_methods) {
  const json vars = {{"s", "  Hello World  "}, {"l", {3, 1, 2}}, {"d", {{"b", 1}, {"a", 2}}}};
  EXPECT_EQ(
      render("{{ s|trim|upper }}|{{ s|length }}|{{ l|sort|join(',') }}|{{ l|first }}|{{ l|last }}", vars),
      "HELLO WORLD|15|1,2,3|3|2");
  EXPECT_EQ(render("{{ d|tojson }}|{{ d|dictsort }}|{{ d.get('a') }}|{{ d.get('z', 9) }}", vars),
            "{\"b\": 1, \"a\": 2}|[[\"a\", 2], [\"b\", 1]]|2|9");
  EXPECT_EQ(render("{{ d|tojson(indent=2) }}", vars), "{\n  \"b\": 1,\n  \"a\": 2\n}");
  EXPECT_EQ(
      render("{{ s.strip().split(' ') }}|{{ 'a-b'.replace('-', '+') }}|{{ 'ab'.startswith('a') }}", vars),
      "[\"Hello\", \"World\"]|a+b|true");
  EXPECT_EQ(render("{{ ms|selectattr('role', 'equalto', 'user')|map(attribute='c')|join }}",
                   {{"ms", {{{"role", "user"}, {"c", "x"}}, {{"role", "bot"}, {"c", "y"}}}}}),
            "x");
  EXPECT_EQ(render("{{ x|default('d') }}|{{ 'a\\nb'|indent(2, true) }}|{{ 3.7|int }}|{{ '5'|int + 1 }}"),
            "d|  a\n  b|3|6");
}

TEST(Jinja, loops_scopes_namespace_and_macros) {
  EXPECT_EQ(
      render("{% for x in l %}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}",
             {{"l", {"a", "b"}}}),
      "1truefalse2;2falsetrue2;");
  EXPECT_EQ(render("{% for x in l if x > 1 %}{{ x }}{% else %}none{% endfor %}", {{"l", {1, 2, 3}}}), "23");
  EXPECT_EQ(render("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(render("{% for k, v in d.items() %}{{ k }}={{ v }} {% endfor %}", {{"d", {{"a", 1}, {"b", 2}}}}),
            "a=1 b=2 ");
  EXPECT_EQ(render("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}"), "1");
  EXPECT_EQ(render("{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% endfor "
                   "%}{{ ns.n }}"),
            "6");
  EXPECT_EQ(render("{% macro m(a, b='B') %}{{ a }}{{ b }}{% endmacro %}{{ m(1) }}{{ m(2, b=3) }}"), "1B23");
  EXPECT_EQ(render("{% macro w() %}[{{ caller() }}]{% endmacro %}{% call w() %}in{% endcall %}"), "[in]");
  EXPECT_EQ(render("{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break "
                   "%}{% endif %}"
                   "{{ i }}{% endfor %}"),
            "02");
  EXPECT_EQ(render("{% set b %}x{{ 1 }}{% endset %}{{ b }}{% filter upper %}up{% endfilter %}"), "x1UP");
}

TEST(Jinja, whitespace_control_and_hf_trim_lstrip_blocks) {
  EXPECT_EQ(render("a  {%- if true -%}  b  {%- endif -%}  c"), "abc");
  EXPECT_EQ(render("x\n  {% if true %}\n    y\n  {% endif %}\nz\n"), "x\n    y\nz");
  EXPECT_EQ(render("a {{- ' b ' -}} c{# gone #}d"), "a b cd");
  EXPECT_EQ(render("{% generation %}kept{% endgeneration %}"), "kept");
  EXPECT_EQ(preprocess_template("  {% x %}\nabc\n", true, true), "{% x %}abc");
}

TEST(Jinja, raise_exception_and_unsupported_features_name_the_problem) {
  EXPECT_EQ(render_error("{{ raise_exception('Roles must alternate') }}"), "Roles must alternate");
  EXPECT_NE(render_error("{% macro_x %}").find("macro_x"), std::string::npos);
  EXPECT_NE(render_error("{{ 'a'|frobnicate }}").find("frobnicate"), std::string::npos);
  EXPECT_NE(render_error("{{ 1 is frobnicated }}").find("frobnicated"), std::string::npos);
  EXPECT_NE(render_error("{{ 'a'.frobnicate() }}").find("not a function"), std::string::npos);
  EXPECT_NE(render_error("{% if x %}never closed").find("endif"), std::string::npos);
}

TEST(Jinja, strftime_now_uses_the_injected_clock) {
  TemplateOptions opt;
  opt.now = [] {
    std::tm t{};
    t.tm_year = 2025 - 1900;
    t.tm_mon = 0;
    t.tm_mday = 5;
    t.tm_hour = 7;
    t.tm_min = 3;
    return t;
  };
  EXPECT_EQ(render("{{ strftime_now('%d %b %Y, %B %H:%M %%') }}", json::object(), opt),
            "05 Jan 2025, January 07:03 %");
}

TEST(Jinja, js_number_and_string_helpers) {
  EXPECT_EQ(js::number_to_string(1e21), "1e+21");
  EXPECT_EQ(js::number_to_string(123456789012345680000.0), "123456789012345680000");
  EXPECT_EQ(js::number_to_string(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(js::number_to_string(1e-7), "1e-7");
  EXPECT_EQ(js::number_to_string(-0.000001), "-0.000001");
  EXPECT_EQ(js::utf16_length("a😀b"), 4u);
  EXPECT_EQ(js::json_quote("é😀\x01", true), "\"\\u00e9\\ud83d\\ude00\\u0001\"");
  EXPECT_EQ(js::trim("\xC2\xA0 x \xE2\x80\xA8"), "x");
  EXPECT_EQ(js::title_case("hello-world it's"), "Hello-World It'S");
  EXPECT_EQ(render("a\xFF"
                   "b\xE2\x82"),
            "a\xEF\xBF\xBD"
            "b\xEF\xBF\xBD");  // the template source goes through text::utf8_lossy
}

// --- sandbox -----------------------------------------------------------------------------------------

TEST(JinjaSandbox, dunder_attributes_are_refused) {
  const json vars = {{"messages", {{{"role", "user"}}}}};
  EXPECT_NE(render_error("{{ messages.__class__ }}", vars).find("__class__"), std::string::npos);
  EXPECT_NE(render_error("{{ messages.__init__ }}", vars).find("__init__"), std::string::npos);
  EXPECT_NE(render_error("{{ cycler.__init__.__globals__ }}", vars).find("__init__"), std::string::npos);
  EXPECT_NE(render_error("{{ ''['__class__'] }}", vars).find("__class__"), std::string::npos);
  EXPECT_NE(render_error("{% set ns = namespace() %}{% set ns.__dict__ = 1 %}").find("__dict__"),
            std::string::npos);
  // Data keys that happen to start with "__" stay readable.
  EXPECT_EQ(render("{{ d.__x }}", {{"d", {{"__x", "ok"}}}}), "ok");
}

TEST(JinjaSandbox, templates_only_see_the_given_variables) {
  EXPECT_EQ(render("{{ os }}{{ self }}{{ config }}{{ request }}{{ lipsum }}{{ cycler }}{{ joiner }}"), "");
  EXPECT_NE(render_error("{{ os.system('ls') }}").find("not a function"), std::string::npos);
}

// --- hostile templates --------------------------------------------------------------------------------

TEST(JinjaHostile, huge_range_fails_fast) {
  EXPECT_NE(render_error("{% for i in range(10**9) %}x{% endfor %}").find("range"), std::string::npos);
  EXPECT_NE(render_error("{{ range(0, 10**12, 2)|length }}").find("range"), std::string::npos);
  // 2**53 + 1 == 2**53 in doubles: the loop would never end (and the item count check passes).
  EXPECT_NE(render_error("{{ range(2**53, 2**53 + 4)|length }}").find("does not advance"), std::string::npos);
  EXPECT_NE(render_error("{{ range(10**17, 10**17 + 16)|length }}").find("does not advance"), std::string::npos);
}

TEST(JinjaHostile, nested_loops_hit_the_iteration_limit) {
  const std::string msg = render_error(
      "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}x{% endfor %}{% endfor "
      "%}{% endfor %}");
  EXPECT_NE(msg.find("iterations"), std::string::npos) << msg;
}

TEST(JinjaHostile, deep_macro_recursion_is_cut_off) {
  EXPECT_NE(render_error("{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}").find("nested"),
            std::string::npos);
  EXPECT_NE(render_error("{% macro r() %}{% call r() %}x{% endcall %}{% endmacro %}{{ r() }}").find("nested"),
            std::string::npos);
}

TEST(JinjaHostile, huge_output_is_cut_off) {
  render_error("{{ 'x' * 10**9 }}");  // string repetition is not supported at all (as in the reference)
  EXPECT_NE(
      render_error(
          "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}")
          .find("limit"),
      std::string::npos);
  EXPECT_NE(
      render_error(
          "{% set ns = namespace(a=[1]) %}{% for i in range(64) %}{% set ns.a = ns.a + ns.a %}{% endfor %}")
          .find("items"),
      std::string::npos);
  EXPECT_NE(render_error("{% for i in range(1000000) %}{{ 'abcdefghijklmnopqrstuvwxyz' }}{% endfor %}")
                .find("limit"),
            std::string::npos);
  render_error("{{ {'a': 1}|tojson(indent=100000000) }}");
  render_error("{{ 'x'|indent(100000000, true) }}");
}

TEST(JinjaHostile, deep_syntax_nesting_fails_to_parse) {
  render_error("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}");
  render_error("{{ " + std::string(5000, '[') + std::string(5000, ']') + " }}");
  std::string chain = "{{ 1";
  for (int i = 0; i < 20000; ++i) chain += " + 1";
  render_error(chain + " }}");
  std::string ifs;
  for (int i = 0; i < 5000; ++i) ifs += "{% if true %}";
  render_error(ifs);
  std::string nots = "{{ ";
  for (int i = 0; i < 5000; ++i) nots += "not ";
  render_error(nots + "x }}");
}

TEST(JinjaHostile, deep_and_cyclic_values_do_not_crash) {
  // 100k-deep nested lists are built and destroyed without recursion; printing them hits the depth limit.
  EXPECT_EQ(
      render("{% set ns = namespace(x=[]) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}"
             "{{ ns.x|length }}"),
      "1");
  render_error(
      "{% set ns = namespace(x=[]) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x "
      "}}");
  // A namespace that contains itself: printing fails cleanly, and the cycle is broken after the render.
  render_error("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}");
  EXPECT_EQ(render("{% set ns = namespace() %}{% set ns.me = [ns] %}{{ ns.me|length }}"), "1");
}

TEST(JinjaHostile, work_limit_stops_quadratic_templates) {
  TemplateOptions opt;
  opt.limits.max_work = 2'000'000;
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(Template("{% for i in range(100000) %}{{ l|sort|length }}{% endfor %}", opt)
                   .render({{"l", json::array({5, 4, 3, 2, 1, 0, 9, 8, 7, 6})}}),
               Error);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 3.0 * test::time_scale());
}

TEST(JinjaHostile, caller_escaping_its_call_block_is_refused) {
  const std::string keep =
      "{% set ns = namespace() %}{% macro keep() %}{% set ns.c = caller %}{% endmacro %}";
  // The call block's scope (the template's top level) is still alive: the reference renders it too.
  EXPECT_EQ(render(keep + "{% call keep() %}x{% endcall %}{{ ns.c() }}"), "x");
  // Its scope (a loop body) has ended: refused instead of touching freed memory.
  render_error(keep + "{% for i in [1] %}{% call keep() %}x{% endcall %}{% endfor %}{{ ns.c() }}");
}

}  // namespace
}  // namespace lp::text::jinja
