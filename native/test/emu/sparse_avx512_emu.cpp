// sparse_avx512_emu.cpp - builds native/cpu/x86/sparse_avx512.cpp with its
// intrinsics emulated (CMake force-includes the emulation header), for
// test_emulated_isa on machines without AVX-512 VBMI2.
#include "../../cpu/x86/sparse_avx512.cpp"
