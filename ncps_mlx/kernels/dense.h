// Dense row-major helpers of the CfC and LSTM kernels: matrices as rows, and matrix
// products as a register-blocked micro-kernel.
//
// The product C += A B runs tile by tile: a tile of kTileRows rows by kTileCols columns
// of C is summed in vector registers over the whole inner dimension (each step one
// broadcast of an A value per row and two vector loads of a B row), then added to C
// once. The B panel of a tile column (inner x kTileCols values) stays in the L1 cache
// while the tiles of every row pass over it. Each value of C is summed over the inner
// dimension in order, by one tile; the kernels call these on pieces fixed by the
// shapes (parallel.h), so no value depends on the thread count.

#pragma once

#include <cstring>

#include "common.h"

namespace ncps {

// A matrix in memory as rows of contiguous values `ld` apart (a broadcast has ld 0).
struct Rows {
  const float* data;
  int64_t ld;
  const float* operator[](int64_t row) const {
    return data + row * ld;
  }
};

// Scratch values, left uninitialised: every use writes before it reads. In MLX's memory:
// its allocator keeps freed buffers for the next call (a fresh allocation of megabytes
// costs a page fault per 4 KiB), and MLX's memory figures count them.
class Buffer {
 public:
  explicit Buffer(size_t size)
      : data_(mx::allocator::malloc(std::max<size_t>(size, 1) * sizeof(float))) {}
  float* get() const {
    return static_cast<float*>(data_.buffer().raw_ptr());
  }

 private:
  mx::allocator::Data data_;
};

// A matrix read through any strides: element (r, q) at data[r * row + q * col]. A
// transposed view of Rows is one.
struct Strided {
  const float* data;
  int64_t row, col;
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

// The values of `a` in row-major order: in place when it is, else copied to `buffer`.
inline const float* dense(const mx::array& a, std::vector<float>& buffer) {
  if (a.flags().row_contiguous)
    return a.data<float>();
  buffer.resize(a.size());
  std::vector<int> index(a.ndim(), 0);
  for (size_t i = 0; i < buffer.size(); ++i) {
    int64_t at = 0;
    for (int d = 0; d < a.ndim(); ++d)
      at += index[d] * a.strides()[d];
    buffer[i] = a.data<float>()[at];
    for (int d = a.ndim() - 1; d >= 0 && ++index[d] == a.shape(d); --d)
      index[d] = 0;
  }
  return buffer.data();
}

// The widest vector of floats the target has, and the tile rows its vector registers
// hold (two accumulators per row, a broadcast and two loads beside them): 32 registers
// with AVX-512 and on arm64, 16 with AVX and SSE.
#if defined(__AVX512F__)
constexpr int kLanes = 16, kTileRows = 8;
#elif defined(__AVX__)
constexpr int kLanes = 8, kTileRows = 4;
#elif defined(__aarch64__)
constexpr int kLanes = 4, kTileRows = 8;
#else
constexpr int kLanes = 4, kTileRows = 4;
#endif
using Vec = float __attribute__((vector_size(kLanes * sizeof(float))));
using UnalignedVec = float __attribute__((vector_size(kLanes * sizeof(float)), aligned(4)));
constexpr int kTileCols = 2 * kLanes;

inline Vec load(const float* p) {
  return *reinterpret_cast<const UnalignedVec*>(p);
}

inline void store(float* p, Vec v) {
  *reinterpret_cast<UnalignedVec*>(p) = v;
}

// Whether a product adds to C or overwrites it (no zeroing of C beforehand).
enum class Write { kAdd, kSet };

// C tile (R rows, `cols` <= kTileCols valid columns) += (or =) A (R, p) @ B (p, kTileCols).
template <int R>
inline void tile(float* c, int64_t ldc, Strided a, const float* b, int64_t ldb, int p,
                 int cols, Write write) {
  Vec sum[R][2] = {};
  for (int q = 0; q < p; ++q) {
    const Vec b0 = load(b + q * ldb), b1 = load(b + q * ldb + kLanes);
    for (int r = 0; r < R; ++r) {
      const float x = a.data[r * a.row + q * a.col];
      sum[r][0] += x * b0;
      sum[r][1] += x * b1;
    }
  }
  const bool add = write == Write::kAdd;
  for (int r = 0; r < R; ++r) {
    float* cr = c + r * ldc;
    if (cols == kTileCols) {
      store(cr, add ? load(cr) + sum[r][0] : sum[r][0]);
      store(cr + kLanes, add ? load(cr + kLanes) + sum[r][1] : sum[r][1]);
    } else {
      float values[kTileCols];
      std::memcpy(values, sum[r], sizeof(values));
      for (int j = 0; j < cols; ++j)
        cr[j] = add ? cr[j] + values[j] : values[j];
    }
  }
}

// C (m, n) += (or =) A (m, p) @ B (p, n), C's rows `ldc` apart.
inline void gemm(float* c, int64_t ldc, Strided a, Rows b, int m, int p, int n, Write write) {
  std::vector<float> edge;
  for (int j = 0; j < n; j += kTileCols) {
    const int cols = std::min(kTileCols, n - j);
    const float* panel = b.data + j;
    int64_t ld = b.ld;
    if (cols < kTileCols) { // the last columns, zero-padded to a whole tile
      edge.assign(size_t(p) * kTileCols, 0.f);
      for (int q = 0; q < p; ++q)
        std::copy(b[q] + j, b[q] + j + cols, edge.data() + int64_t(q) * kTileCols);
      panel = edge.data();
      ld = kTileCols;
    }
    int r = 0;
    for (; r + kTileRows <= m; r += kTileRows)
      tile<kTileRows>(c + r * ldc + j, ldc, {a.data + r * a.row, a.row, a.col}, panel, ld, p,
                      cols, write);
    for (; r < m; ++r)
      tile<1>(c + r * ldc + j, ldc, {a.data + r * a.row, a.row, a.col}, panel, ld, p, cols,
              write);
  }
}

// out (B, n) += (or =) x (B, k) @ w (k, n).
inline void matmul(float* out, int64_t ldo, Rows x, Rows w, int batch, int k, int n,
                   Write write = Write::kAdd) {
  gemm(out, ldo, {x.data, x.ld, 1}, w, batch, k, n, write);
}

// Rows first..first+count of a (k, n) matrix set to (or added to) those of x^T @ d for
// x (B, k), d (B, n): those rows of a weight's gradient, each summed over the batch in
// order.
inline void outer(float* out, Rows x, Rows d, int batch, int first, int count, int n,
                  Write write = Write::kSet) {
  gemm(out + int64_t(first) * n, n, {x.data + first, 1, x.ld}, d, count, batch, n, write);
}

// out (n,) += the column sums of d (B, n): a bias's gradient.
inline void column_sums_add(float* out, Rows d, int batch, int n) {
  for (int b = 0; b < batch; ++b)
    for (int j = 0; j < n; ++j)
      out[j] += d[b][j];
}

// The pieces of the dense kernels (CfC, LSTM), fixed so that they do not depend on the
// thread count (parallel.h): batch rows of a step, and rows of a weight's gradient.
constexpr int kRowGrain = 8, kWeightGrain = 16;

// Every row of out (B, n) set to the vector v.
inline void fill_rows(float* out, int64_t ldo, Rows v, int batch, int n) {
  for (int b = 0; b < batch; ++b)
    std::copy(v[0], v[0] + n, out + b * ldo);
}

} // namespace ncps
