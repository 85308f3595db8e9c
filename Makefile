# The two commands a user needs: `make demo` and `make test`. Both install what is missing first.
BUILD ?= build
JOBS ?= $(shell nproc)
DEMO_MODEL ?= models/tiny-glm5

.PHONY: all setup build demo test asan fuzz-build fuzz format clean

all: build

setup:
	@bash scripts/setup.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release

build: setup $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

# The bundled trained model: what it is, how well it predicts held-out text and solves held-out
# arithmetic (50 one-step + 50 two-step problems), then one chat turn.
demo: build
	$(BUILD)/whittle info $(DEMO_MODEL)
	$(BUILD)/whittle eval $(DEMO_MODEL) --task ppl --doc-start '<|endoftext|>'
	$(BUILD)/whittle eval $(DEMO_MODEL) --task arith --limit 50
	$(BUILD)/whittle generate $(DEMO_MODEL) --chat -p 'What does the `ls` command do?' --max-tokens 96 --seed 1

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
fuzz-build: setup
	CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWHITTLE_FUZZ=ON -DWHITTLE_NATIVE=OFF
	cmake --build build-fuzz -j $(JOBS) --target $(FUZZ_TARGET)

fuzz: fuzz-build
	mkdir -p build-fuzz/corpus-$(FUZZ_TARGET)
	UBSAN_OPTIONS=halt_on_error=1 build-fuzz/$(FUZZ_TARGET) -max_total_time=$(FUZZ_SECONDS) build-fuzz/corpus-$(FUZZ_TARGET) fuzz/seeds/$(FUZZ_TARGET)

format:
	find src fuzz bench -name '*.cc' -o -name '*.h' | xargs clang-format -i

clean:
	rm -rf $(BUILD) build-asan build-fuzz
