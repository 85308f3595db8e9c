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
# arithmetic (50 one-step + 50 two-step problems), what it can and cannot do, then one chat turn.
demo: build
	$(BUILD)/whittle info $(DEMO_MODEL)
	$(BUILD)/whittle eval $(DEMO_MODEL) --task ppl --doc-start '<|endoftext|>'
	@echo '# The first 50 problems of each held-out file, to keep the demo short. With 50 problems a'
	@echo '# score moves by about 7 points (binomial standard error) from sample to sample:'
	@echo '# docs/RESULTS.md has all 200 of each (54% one-step, 45% two-step).'
	$(BUILD)/whittle eval $(DEMO_MODEL) --task arith --limit 50
	@echo '# tiny-glm5: 21.6M parameters trained 3.75 h on 2 CPU cores. It can continue prose, code and'
	@echo '# chats in the style of its training text, solve about half of small arithmetic word problems'
	@echo '# posed as above, and give the chat answers it saw often. It cannot state facts reliably (its'
	@echo '# word definitions are mostly invented), follow new instructions, or do sums in a chat turn'
	@echo '# as well as in the question form it was trained on. One chat turn, sampled with the'
	@echo '# defaults of its generation_config.json (temperature 0.8, top-k 50, top-p 0.95):'
	$(BUILD)/whittle generate $(DEMO_MODEL) --chat -p 'What can you do?' --seed 1

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
