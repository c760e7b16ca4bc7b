// gemm_s8_avx512vnni_emu.cpp - builds native/cpu/x86/gemm_s8_avx512vnni.cpp with its
// intrinsics emulated (CMake force-includes the emulation header), for
// test_emulated_isa on machines without the ISA.
#include "../../cpu/x86/gemm_s8_avx512vnni.cpp"
