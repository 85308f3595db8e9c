# The two commands a user needs: `make demo` and `make test`. Both install what is missing first.
BUILD ?= build
JOBS ?= $(shell nproc)
DEMO_MODEL ?= models/tiny-glm5

.PHONY: all setup build demo test asan fuzz-build fuzz format format-check clean

all: build

setup:
	@bash scripts/setup.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release

build: setup $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

# The bundled trained model: what it is, how well it predicts held-out text and solves held-out
# arithmetic, then the recipe this project exists for: prune 25 % of every MoE layer's experts with
# REAP, quantize what is left to int4 with AutoRound (W4A16, group 128, 200 steps per layer), evaluate
# the result the same way, and chat one turn with it. About 4 minutes on 2 cores (3 min 34 s after the
# build on the 2-core VM, 2026-12-06), most of it
# AutoRound (DEMO_ITERS=50 for a quicker look); the outputs go to out/ (git-ignored).
DEMO_OUT ?= out
DEMO_ITERS ?= 200
DEMO_EVAL = $(wildcard $(DEMO_MODEL)/eval/*.txt)
DEMO_ARITH = $(DEMO_MODEL)/eval/arith_one_step.jsonl $(DEMO_MODEL)/eval/arith_two_step.jsonl
demo: build
	$(BUILD)/whittle info $(DEMO_MODEL)
	@echo '# Before: held-out perplexity, and the first 50 problems of each held-out arithmetic file'
	@echo '# (with 50 problems a score moves by about 7 points from sample to sample; docs/RESULTS.md'
	@echo '# has all 400).'
	$(BUILD)/whittle eval $(DEMO_MODEL) --task ppl --doc-start '<|endoftext|>'
	$(BUILD)/whittle eval $(DEMO_MODEL) --task arith --limit 50
	@echo '# tiny-glm5: 21.6M parameters trained 3.75 h on 2 CPU cores. It can continue prose, code and'
	@echo '# chats in the style of its training text and solve about half of small arithmetic word'
	@echo '# problems; it cannot state facts reliably or follow new instructions.'
	@echo '# The recipe, step 1: REAP drops 8 of the 32 routed experts of every MoE layer.'
	$(BUILD)/whittle prune $(DEMO_MODEL) $(DEMO_OUT)/tiny-glm5-reap25 --ratio 0.25 --force
	@echo '# Step 2: AutoRound int4 (the 5 attention + 2 indexer + 75 expert Linears of each MoE layer;'
	@echo '# the dense MLP, the indexer weights_proj, routers and lm_head stay 16-bit), GPTQ format.'
	$(BUILD)/whittle quantize $(DEMO_OUT)/tiny-glm5-reap25 $(DEMO_OUT)/tiny-glm5-reap25-w4g128 --iters $(DEMO_ITERS) --force
	$(BUILD)/whittle info $(DEMO_OUT)/tiny-glm5-reap25-w4g128
	@echo '# After: the same evaluations on the pruned int4 model.'
	$(BUILD)/whittle eval $(DEMO_OUT)/tiny-glm5-reap25-w4g128 --task ppl --doc-start '<|endoftext|>' --data $(DEMO_EVAL)
	$(BUILD)/whittle eval $(DEMO_OUT)/tiny-glm5-reap25-w4g128 --task arith --limit 50 --data $(DEMO_ARITH)
	@echo '# One chat turn with it, sampled with the defaults of its generation_config.json'
	@echo '# (temperature 0.8, top-k 50, top-p 0.95):'
	$(BUILD)/whittle generate $(DEMO_OUT)/tiny-glm5-reap25-w4g128 --chat -p 'What can you do?' --seed 1

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 600

# The whole suite under AddressSanitizer and UBSan, in its own build folder.
asan: setup
	cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWHITTLE_SANITIZE=ON -DWHITTLE_NATIVE=OFF
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j $(JOBS) --timeout 1200

# libFuzzer targets (clang). Run one with: make fuzz FUZZ_TARGET=safetensors_fuzz FUZZ_SECONDS=600
FUZZ_TARGET ?= safetensors_fuzz
FUZZ_SECONDS ?= 60
fuzz-build:
	@bash scripts/setup.sh fuzz
	CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWHITTLE_FUZZ=ON -DWHITTLE_NATIVE=OFF
	cmake --build build-fuzz -j $(JOBS) --target $(FUZZ_TARGET)

fuzz: fuzz-build
	mkdir -p build-fuzz/corpus-$(FUZZ_TARGET)
	UBSAN_OPTIONS=halt_on_error=1 build-fuzz/$(FUZZ_TARGET) -max_total_time=$(FUZZ_SECONDS) build-fuzz/corpus-$(FUZZ_TARGET) fuzz/seeds/$(FUZZ_TARGET)

# The C++ sources, formatted by .clang-format; CI runs format-check.
FORMAT_DIRS = $(wildcard src fuzz bench)
format:
	@bash scripts/setup.sh format
	find $(FORMAT_DIRS) -name '*.cc' -o -name '*.h' | xargs clang-format -i

format-check:
	@bash scripts/setup.sh format
	find $(FORMAT_DIRS) -name '*.cc' -o -name '*.h' | xargs clang-format --dry-run -Werror

clean:
	rm -rf $(BUILD) build-asan build-fuzz
