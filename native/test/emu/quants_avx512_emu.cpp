// quants_avx512_emu.cpp - builds native/cpu/x86/quants_avx512.cpp with its
// intrinsics emulated (CMake force-includes the emulation header), for
// test_ops_emu on machines without AVX-512 VNNI.
#include "../../cpu/x86/quants_avx512.cpp"
