// End to end: tests/e2e/vllm_parity.mjs (see its header): vLLM-named metrics, /tokenize, /detokenize and
// /version against `loraplex serve`.
#include "e2e_runner.h"

TEST(E2E, VllmParity) { lp::test::run_e2e_script("vllm_parity.mjs"); }
