// libFuzzer target for the safetensors header parser. Any input must either parse or throw
// whittle::Error; a crash, a sanitizer report or any other exception is a finding. After a
// successful parse the fuzzer also touches every tensor's bytes through the same arithmetic
// SafeTensorsFile::view uses, so an offset the validator let through that points outside the buffer
// shows up under ASan.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "io/safetensors.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Copy into an exactly-sized heap buffer so any read past the end is an ASan report.
  std::vector<std::byte> file(size);
  if (size) std::memcpy(file.data(), data, size);
  try {
    whittle::SafeTensorsHeader header = whittle::parse_safetensors_header(file, "fuzz-input");
    std::span<const std::byte> all(file);
    std::vector<float> scratch;
    for (const whittle::TensorInfo& t : header.tensors) {
      std::span<const std::byte> bytes = all.subspan(header.data_offset + t.begin, t.nbytes);
      if (t.nbytes != static_cast<size_t>(t.numel()) * whittle::dtype_size(t.dtype))
        __builtin_trap();
      if (t.dtype == whittle::DType::BOOL || t.nbytes > (1u << 20)) continue;
      scratch.resize(static_cast<size_t>(t.numel()));
      whittle::convert_to_f32(t.dtype, bytes.data(), scratch.size(), scratch.data());
    }
  } catch (const whittle::Error&) {
  }
  return 0;
}
