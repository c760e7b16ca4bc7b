// gemm_s8_amx_emu.cpp - builds native/cpu/x86/gemm_s8_amx.cpp with its
// intrinsics emulated (CMake force-includes the emulation header), for
// test_emulated_isa on machines without the ISA.
#include "../../cpu/x86/gemm_s8_amx.cpp"
