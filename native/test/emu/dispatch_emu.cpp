// dispatch_emu.cpp - dispatch.cpp for the emulated core (CMake sparq_core_emu):
// with SPARQ_EMULATED_ISA it offers avxvnni / avx512vnni / amx on any AVX2 CPU,
// whose objects there are the *_emu.cpp builds of the ISA files.
#define SPARQ_EMULATED_ISA 1
#include "../../cpu/dispatch.cpp"
