// Dense row-major helpers of the CfC and LSTM kernels: matrices as rows, and the
// product of a batch of rows with a weight matrix.

#pragma once

#include "common.h"

namespace ncps {

// A matrix in memory as rows of contiguous values `ld` apart (a broadcast has ld 0).
struct Rows {
  const float* data;
  int64_t ld;
  const float* operator[](int row) const {
    return data + row * ld;
  }
};

// An input as Rows: directly when its columns are contiguous, else copied to `buffer`.
inline Rows rows(const mx::array& a, std::vector<float>& buffer) {
  const int cols = a.shape(-1);
  const int64_t col = a.strides().back();
  const int64_t row = a.ndim() == 2 ? a.strides()[0] : 0;
  if (col == 1)
    return {a.data<float>(), row};
  const int count = a.ndim() == 2 ? a.shape(0) : 1;
  buffer.resize(size_t(count) * cols);
  for (int i = 0; i < count; ++i)
    for (int j = 0; j < cols; ++j)
      buffer[size_t(i) * cols + j] = a.data<float>()[i * row + j * col];
  return {buffer.data(), cols};
}

// out (B, n) += x (B, k) @ w (k, n), four rows of x at a time so each row of w is
// loaded once per four.
inline void matmul_add(float* out, int64_t ldo, Rows x, Rows w, int batch, int k, int n) {
  int b = 0;
  for (; b + 4 <= batch; b += 4) {
    float *o0 = out + b * ldo, *o1 = o0 + ldo, *o2 = o1 + ldo, *o3 = o2 + ldo;
    const float *x0 = x[b], *x1 = x[b + 1], *x2 = x[b + 2], *x3 = x[b + 3];
    for (int i = 0; i < k; ++i) {
      const float a0 = x0[i], a1 = x1[i], a2 = x2[i], a3 = x3[i];
      const float* wi = w[i];
      for (int j = 0; j < n; ++j) {
        const float wij = wi[j];
        o0[j] += a0 * wij;
        o1[j] += a1 * wij;
        o2[j] += a2 * wij;
        o3[j] += a3 * wij;
      }
    }
  }
  for (; b < batch; ++b) {
    float* o = out + b * ldo;
    for (int i = 0; i < k; ++i) {
      const float a = x[b][i];
      const float* wi = w[i];
      for (int j = 0; j < n; ++j)
        o[j] += a * wi[j];
    }
  }
}

// Every row of out (B, n) set to the vector v.
inline void fill_rows(float* out, int64_t ldo, Rows v, int batch, int n) {
  for (int b = 0; b < batch; ++b)
    std::copy(v[0], v[0] + n, out + b * ldo);
}

} // namespace ncps
