// The translation unit that lp_test_pch (tests/CMakeLists.txt) precompiles its header for; nothing else.
