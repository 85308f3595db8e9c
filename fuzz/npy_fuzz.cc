// libFuzzer target for the .npy parser: any input must either parse or throw whittle::Error; a
// crash, a sanitizer report or any other exception is a finding. A parsed array must hold exactly
// product(shape) x itemsize bytes.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "io/npy.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::byte> file(size);  // exactly sized, so a read past the end is an ASan report
  if (size) std::memcpy(file.data(), data, size);
  try {
    whittle::NpyArray a = whittle::parse_npy(file, "fuzz-input");
    if (a.bytes.size() != static_cast<size_t>(a.numel()) * whittle::dtype_size(a.dtype))
      __builtin_trap();
  } catch (const whittle::Error&) {
  }
  return 0;
}
