// End to end: tests/e2e/adapter_files.mjs (see its header): adapter files under --lora-root and the KV plan,
// against the real `loraplex serve`.
#include "e2e_runner.h"

TEST(E2E, AdapterFiles) { lp::test::run_e2e_script("adapter_files.mjs"); }
