// Elementwise float kernels of the MLP model (exp for the softmax, tanh for the hidden layer), written
// so the compiler vectorises them: libm's scalar expf/tanhf calls took ~40% of a training step.
#ifndef PSRV_WORKER_MODEL_VECTOR_MATH_H_
#define PSRV_WORKER_MODEL_VECTOR_MATH_H_

#include <cstddef>

namespace psrv {

// x[i] = exp(x[i] - shift) for i < n, and returns the sum of the results. Results within a few ulp
// of exp for x[i] - shift in [-87, 88]; arguments below -87 give exp(-87) (about 1.6e-38) and above
// 88 give exp(88). NaN stays NaN.
float ExpShiftedInPlace(float* x, size_t n, float shift);

// x[i] = tanh(x[i]) for i < n, within 3e-7 absolute. NaN stays NaN.
void TanhInPlace(float* x, size_t n);

}  // namespace psrv

#endif  // PSRV_WORKER_MODEL_VECTOR_MATH_H_
