// gptq.h - GPTQ weight quantization (see gptq.cpp).
#pragma once
#include <cstdint>

#include "sparq/sparq.h"

namespace sparq {

struct GptqOptions {
  int bits = 8;            // 8: values in [-127, 127]; 4: [-7, 7]
  int64_t group = 0;       // 0: one scale per row; else per group of columns (the last may be partial)
  double dampening = 0.01; // added to H's diagonal, as a fraction of its mean
};
struct GptqStats {
  double error = 0;      // tr((Q - W) H (Q - W)^T) of the result
  double rtn_error = 0;  // the same for round-to-nearest with the same scales layout
};

// w [n, k] (f32), h [k, k] (X^T X over calibration tokens, symmetric) -> q [n, k] (int8 holding
// the quantized integers) and scales [n, groups] with W ~ q * scale.
Error gptq_quantize(const float* w, int64_t n, int64_t k, const double* h, const GptqOptions& o, int8_t* q, float* scales,
                    GptqStats* stats = nullptr);

}  // namespace sparq
