// Isa: the instruction sets whittle's fast kernels are written for, chosen at run time from what
// the CPU reports (one binary runs on any x86-64). `WHITTLE_ISA=scalar|avx2|avxvnni|avx512vnni|amx`
// caps the choice (comparisons, and machines where a wider unit clocks down). The levels are
// ordered: each includes the ones before it (kAmx runs the AVX-512 VNNI kernels too).
#pragma once

#include <string_view>
#include <vector>

namespace whittle {

enum class Isa {
  kScalar,      // plain C++: the kernels' own reference
  kAvx2,        // 256-bit, int8 products by maddubs/madd
  kAvxVnni,     // 256-bit with VNNI dpbusd (Alder Lake and later)
  kAvx512Vnni,  // 512-bit with VNNI dpbusd (Ice Lake server, Sapphire Rapids, Zen 4)
  kAmx,         // AVX-512 VNNI plus AMX int8 tiles for 16 and more rows (Sapphire Rapids on)
};

std::string_view isa_name(Isa isa);
// The best the CPU supports, capped by WHITTLE_ISA (an Error for an unknown or unsupported value).
Isa active_isa();
// Every kernel set this CPU can run, narrowest first (tests run each).
std::vector<Isa> supported_isas();

}  // namespace whittle
