// End to end: tests/e2e/quantized.mjs (see its header), `loraplex serve --quantization int8` with an adapter.
#include "e2e_runner.h"

TEST(E2E, Quantized) { lp::test::run_e2e_script("quantized.mjs"); }
