// attention_avx512_emu.cpp - builds native/cpu/x86/attention_avx512.cpp with its
// intrinsics emulated (CMake force-includes the emulation header), for
// test_emulated_isa on machines without AVX-512.
#include "../../cpu/x86/attention_avx512.cpp"
