// A matrix product with an optional bias, c + a @ b, as one MLX primitive for the CPU:
// the hoisted input projections of the cells (all time steps at once) and their
// gradients, which otherwise run on MLX's CPU BLAS (on Linux a reference BLAS, several
// times slower than the micro-kernel of dense.h).
//
// The output is cut into pieces of rows and columns; when it is small and the inner
// dimension long (a weight's gradient over every sample and step), the inner dimension
// is cut too, each piece summing into its own partial, and the partials are added in
// order. The pieces depend on the shapes alone, so any thread count gives the same bits.

#include <typeinfo>

#include "common.h"
#include "dense.h"
#include "parallel.h"

namespace ncps {
namespace {

constexpr int kPieceRows = 64, kPieceCols = 4 * kTileCols, kInnerGrain = 2048;
// Outputs up to this many values have their inner dimension cut.
constexpr int64_t kSmallOutput = 1 << 16;

void check_product(const std::vector<mx::array>& in) {
  if (in.size() != 2 && in.size() != 3)
    throw argument_error("addmm", "takes a, b and optionally c");
  const mx::array &a = in[0], &b = in[1];
  if (a.ndim() != 2 || b.ndim() != 2 || a.dtype() != mx::float32 || b.dtype() != mx::float32)
    throw argument_error("addmm", "'a' and 'b' must be float32 matrices");
  if (a.shape(1) != b.shape(0))
    throw argument_error(
        "addmm", "'a' (M, K) and 'b' (K, N) do not fit: K is " + std::to_string(a.shape(1)) +
            " and " + std::to_string(b.shape(0)));
  checked_size("addmm", "the output (M x N)", {a.shape(0), b.shape(1)});
  if (in.size() == 3) {
    const mx::array& c = in[2];
    if (c.ndim() != 1 || c.shape(0) != b.shape(1) || c.dtype() != mx::float32)
      throw argument_error("addmm", "'c' must be float32 of shape (N,) = (" +
                                        std::to_string(b.shape(1)) + ",)");
  }
}

struct Split {
  int rows, cols, inner; // pieces along each
};

Split split(int m, int k, int n) {
  const bool cut_inner = int64_t(m) * n <= kSmallOutput && k > kInnerGrain;
  return {pieces_of(m, kPieceRows), pieces_of(n, kPieceCols),
          cut_inner ? pieces_of(k, kInnerGrain) : 1};
}

void product(const std::vector<mx::array>& in, mx::array& out) {
  const mx::array &a = in[0], &b = in[1];
  const int m = a.shape(0), k = a.shape(1), n = b.shape(1);
  const Strided av{a.data<float>(), a.strides()[0], a.strides()[1]};
  std::vector<float> bbuf, cbuf;
  const Rows bv = rows(b, bbuf);
  float* o = out.data<float>();
  const Split s = split(m, k, n);
  // Without an inner split each piece writes its part of the output (set, or added to
  // the bias); with one, each piece sets its part of a partial, added in order after.
  std::vector<float> partials(s.inner > 1 ? size_t(s.inner) * m * n : 0);
  const bool bias = in.size() == 3;
  if (bias)
    fill_rows(o, n, rows(in[2], cbuf), m, n);
  else if (s.inner > 1)
    std::fill_n(o, int64_t(m) * n, 0.f);
  const Write write = bias && s.inner == 1 ? Write::kAdd : Write::kSet;
  parallel_for(s.rows * s.cols * s.inner, [&](int piece) {
    const int r = piece / (s.cols * s.inner) * kPieceRows;
    const int c = piece / s.inner % s.cols * kPieceCols;
    const int q = piece % s.inner * kInnerGrain;
    const int rows_here = std::min(kPieceRows, m - r), cols_here = std::min(kPieceCols, n - c);
    const int inner_here = s.inner > 1 ? std::min(kInnerGrain, k - q) : k;
    float* target = s.inner > 1 ? partials.data() + size_t(piece % s.inner) * m * n : o;
    gemm(target + int64_t(r) * n + c, n, {av.data + r * av.row + q * av.col, av.row, av.col},
         Rows{bv[q] + c, bv.ld}, rows_here, inner_here, cols_here, write);
  });
  for (int part = 0; part < (s.inner > 1 ? s.inner : 0); ++part) // in order
    for (int64_t i = 0; i < int64_t(m) * n; ++i)
      o[i] += partials[size_t(part) * m * n + i];
}

class Product : public CPUPrimitive {
 public:
  using CPUPrimitive::CPUPrimitive;

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs)
      override {
    dispatch(stream(), inputs, outputs, [](auto& in, auto& out) { product(in, out[0]); });
  }
  std::vector<mx::array> vjp(
      const std::vector<mx::array>& primals,
      const std::vector<mx::array>& cotangents,
      const std::vector<int>& argnums,
      const std::vector<mx::array>&) override {
    const mx::array& g = cotangents[0];
    auto multiply = [&](const mx::array& x, const mx::array& y) {
      return mx::array({x.shape(0), y.shape(1)}, mx::float32, std::make_shared<Product>(stream()),
                       {x, y});
    };
    std::vector<mx::array> result;
    for (int arg : argnums) {
      if (arg == 0)
        result.push_back(multiply(g, mx::transpose(primals[1], stream())));
      else if (arg == 1)
        result.push_back(multiply(mx::transpose(primals[0], stream()), g));
      else
        result.push_back(mx::sum(g, 0, false, stream()));
    }
    return result;
  }
  const char* name() const override {
    return "Product";
  }
  bool is_equivalent(const mx::Primitive& other) const override {
    return typeid(*this) == typeid(other);
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return {{inputs[0].shape(0), inputs[1].shape(1)}};
  }

 protected:
  std::shared_ptr<mx::Primitive> clone() override {
    return std::make_shared<Product>(stream());
  }
  void validate(const std::vector<mx::array>& in) override {
    check_product(in);
  }
};

} // namespace

mx::array addmm(const mx::array& a, const mx::array& b, const std::optional<mx::array>& c) {
  std::vector<mx::array> inputs{a, b};
  if (c)
    inputs.push_back(*c);
  check_product(inputs);
  const mx::Stream stream = mx::default_stream(mx::Device::cpu);
  return mx::array({a.shape(0), b.shape(1)}, mx::float32, std::make_shared<Product>(stream),
                   inputs);
}

} // namespace ncps
