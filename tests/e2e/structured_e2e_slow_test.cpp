// End to end: tests/e2e/structured.mjs (see its header): structured outputs and forced tool calls on a
// random-weight model, validated by ajv and RegExp, with the official `openai` client.
#include "e2e_runner.h"

TEST(E2E, StructuredOutputs) { lp::test::run_e2e_script("structured.mjs"); }
