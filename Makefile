# loraplex — the two set-up commands are `make serve` and `make test` (see README.md).
BUILD      ?= build
BUILD_ASAN ?= build-asan
BUILD_TSAN ?= build-tsan
# The tests with threads of their own (adapter manager + loader thread, engine thread, compute pool, HTTP
# connection threads), run under ThreadSanitizer. Only these targets are built in the TSan tree. grammar_test
# is there for GrammarCache's concurrency; its single-threaded brute-force Masks.* cases (minutes under TSan)
# run in the release and ASan trees only.
TSAN_TESTS ?= adapter_manager_tsan_test adapter_manager_test engine_test engine_request_fields_test thread_pool_test http_server_test grammar_test
JOBS       ?= $(shell nproc)
DEMO       ?= demo/smol
STORY      ?= demo/story
PORT       ?= 8000
PREFIX     ?= /usr/local
REPLICAS   ?= 3

.PHONY: deps fixtures build build-asan install cluster cluster-down test test-unit test-asan test-tsan fuzz serve story demo bench clean format

deps:
	@scripts/deps.sh

fixtures: deps
	@scripts/npm-fixtures.sh

$(BUILD)/build.ninja: | deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

# The binary, the docs and the systemd unit under $(PREFIX) (bin/, share/doc/loraplex/, lib/systemd/system/),
# staged under $(DESTDIR) when set: `make build && sudo make install`, or `make install DESTDIR=$PWD/pkgroot PREFIX=/usr`.
install: build
	DESTDIR="$(DESTDIR)" cmake --install $(BUILD) --prefix "$(PREFIX)"

$(BUILD_ASAN)/build.ninja: | deps
	cmake -S . -B $(BUILD_ASAN) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1" -DLP_SANITIZE=ON -DLP_BUILD_BENCH=OFF

build-asan: deps $(BUILD_ASAN)/build.ninja
	cmake --build $(BUILD_ASAN) -j $(JOBS)

# Every test: all tests on the release build, then all of them again under ASan + UBSan (the end-to-end
# suites too: they start the sanitized server), then the threaded tests under TSan.
test: fixtures build build-asan
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j $(JOBS)
	$(MAKE) test-tsan

$(BUILD_TSAN)/build.ninja: | deps
	cmake -S . -B $(BUILD_TSAN) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1" -DLP_TSAN=ON -DLP_BUILD_BENCH=OFF

test-tsan: deps $(BUILD_TSAN)/build.ninja
	cmake --build $(BUILD_TSAN) -j $(JOBS) --target $(TSAN_TESTS)
	cd $(BUILD_TSAN) && TSAN_OPTIONS=halt_on_error=1 LORAPLEX_LOG=error ctest --output-on-failure -j $(JOBS) -E '_NOT_BUILT|^Masks\.'

test-unit: fixtures build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

fuzz: deps
	CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DLP_FUZZ=ON -DLP_BUILD_TESTS=OFF -DLP_BUILD_BENCH=OFF
	cmake --build build-fuzz -j $(JOBS)

demo: build
	@[ -f $(DEMO)/config.json ] || $(BUILD)/loraplex demo-model $(DEMO) --shape smol --seed 1

# The story demo (src/model/demo_story.h): a constructed model that writes readable text, and four rank-1
# adapters that each steer it to their own passage. Rewritten whenever the binary is newer (it takes 0.2 s).
story: build
	@[ $(STORY)/config.json -nt $(BUILD)/loraplex ] || $(BUILD)/loraplex demo-model $(STORY) --shape story --adapters 4

serve: story
	@echo "try:  curl -s http://127.0.0.1:$(PORT)/v1/chat/completions -H 'Content-Type: application/json' -d '{\"model\": \"french-support\", \"messages\": [{\"role\": \"user\", \"content\": \"Where is my order?\"}]}'"
	@echo "      (\"model\": \"story\" is the base; the adapters: medical-qa legal-summary code-review french-support;"
	@echo "       the route \"support\" splits 80/20 between french-support and code-review; dashboard: http://127.0.0.1:$(PORT)/dashboard)"
	$(BUILD)/loraplex serve $(STORY) --port $(PORT) --max-loras 4 --max-lora-rank 8 --kv-cache-memory 128MiB \
	  --lora-modules $(foreach a,medical-qa legal-summary code-review french-support,$(a)=$(STORY)/adapters/$(a)) \
	  --lora-route 'support=french-support:80,code-review:20' \
	  --allow-runtime-lora-updating --lora-root $(STORY)/adapters

# The story demo on REPLICAS replicas behind HAProxy on PORT (scripts/cluster.sh; docs/deploy.md): each
# adapter's requests stick to one replica. The compute threads are shared out between the replicas.
cluster: story
	scripts/cluster.sh up --replicas $(REPLICAS) --port $(PORT) -- $(STORY) --max-loras 4 --max-lora-rank 8 \
	  --kv-cache-memory 128MiB --threads $$(( $(JOBS) / $(REPLICAS) > 0 ? $(JOBS) / $(REPLICAS) : 1 )) \
	  --lora-modules $(foreach a,medical-qa legal-summary code-review french-support,$(a)=$(STORY)/adapters/$(a)) \
	  --lora-route 'support=french-support:80,code-review:20' --lora-root $(STORY)/adapters --enable-lora-resolver
	@echo "try:  curl -s http://127.0.0.1:$(PORT)/v1/completions -H 'Content-Type: application/json' -d '{\"model\": \"code-review\", \"prompt\": \"Review:\", \"max_tokens\": 40}' -D - | grep -i x-loraplex-replica"
	@echo "stop: make cluster-down"

cluster-down:
	scripts/cluster.sh down

bench: build demo
	$(BUILD)/loraplex bench --model $(DEMO) --batch 1 --prompt-len 256 --gen 32

format:
	find src tests bench fuzz -name '*.cpp' -o -name '*.h' | xargs clang-format -i

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_TSAN) build-fuzz
