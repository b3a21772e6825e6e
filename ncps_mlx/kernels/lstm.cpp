// The mixed-memory LSTM step as one MLX primitive for the CPU, forward and backward,
// with the rational tanh and sigmoid of ncps_mlx.ops:
//   gates = z + h @ wh_t, split (i, ig, fg, og)   (z: the projected input and bias)
//   c' = c sigmoid(fg + 1) + tanh(i) sigmoid(ig),   h' = tanh(c') sigmoid(og)
// The forward pass also returns the gates (a cache), so the backward pass does not
// compute the product again. Samples run in pieces of rows on the pool (parallel.h).

#include <typeinfo>

#include "common.h"
#include "dense.h"
#include "lstm.h"
#include "parallel.h"

namespace ncps {
namespace {

struct Sizes {
  int batch, n;
};

// Throws unless z (B, 4N), h (B, N), c (B, N) and wh_t (N, 4N) fit one another.
Sizes check_step(const mx::array& z, const mx::array& h, const mx::array& c,
                 const mx::array& wh_t) {
  const int batch = h.ndim() == 2 ? h.shape(0) : 0, n = h.ndim() == 2 ? h.shape(1) : 0;
  if (batch < 1 || n < 1)
    throw argument_error("lstm_step", "'h' must be (B, N) with B, N >= 1");
  checked_size("lstm_step", "the gates (B x 4N)", {batch, 4, n});
  checked_size("lstm_step", "'wh_t' (N x 4N)", {n, 4, n});
  check_matrix("lstm_step", z, "z", batch, 4 * n);
  check_matrix("lstm_step", h, "h", batch, n);
  check_matrix("lstm_step", c, "c", batch, n);
  check_matrix("lstm_step", wh_t, "wh_t", n, 4 * n);
  return {batch, n};
}

// Inputs z, h, c, wh_t; outputs h', c', gates (B, 4N).
void forward(const std::vector<mx::array>& in, std::vector<mx::array>& out) {
  const int batch = in[1].shape(0), n = in[1].shape(1);
  std::vector<float> zbuf, hbuf, cbuf, wbuf;
  const Rows z = rows(in[0], zbuf), h = rows(in[1], hbuf), c = rows(in[2], cbuf),
             wh = rows(in[3], wbuf);
  float* h_next = out[0].data<float>();
  float* c_next = out[1].data<float>();
  float* gates = out[2].data<float>();
  parallel_for(pieces_of(batch, kRowGrain), [&](int index) {
    const auto [first, count] = piece_of(index, batch, kRowGrain);
    float* g = gates + int64_t(first) * 4 * n;
    for (int r = 0; r < count; ++r)
      std::copy(z[first + r], z[first + r] + 4 * n, g + int64_t(r) * 4 * n);
    matmul(g, 4 * n, Rows{h[first], h.ld}, wh, count, n, 4 * n);
    for (int b = first; b < first + count; ++b)
      update_row(n, gates + int64_t(b) * 4 * n, c[b], h_next + int64_t(b) * n,
                 c_next + int64_t(b) * n);
  });
}

// Inputs: z, h, c, wh_t, then h', c', gates, then the cotangents of h' and c', then
// wh_t's transpose (transposed_copy).
// Outputs: the cotangents of z (the gates'), h, c and wh_t.
void backward(const std::vector<mx::array>& in, std::vector<mx::array>& out) {
  const int batch = in[1].shape(0), n = in[1].shape(1);
  std::vector<float> hbuf, cbuf, wbuf, dhbuf, dcbuf;
  const Rows h = rows(in[1], hbuf), c = rows(in[2], cbuf), wh = rows(in[9], wbuf);
  const Rows dh_next = rows(in[7], dhbuf), dc_next = rows(in[8], dcbuf);
  const float* c_next = in[5].data<float>();
  const float* gates = in[6].data<float>();
  float* d_gates = out[0].data<float>();
  float* d_h = out[1].data<float>();
  float* d_c = out[2].data<float>();
  float* d_wh = out[3].data<float>();
  parallel_for(pieces_of(batch, kRowGrain), [&](int index) {
    const auto [first, count] = piece_of(index, batch, kRowGrain);
    for (int b = first; b < first + count; ++b)
      update_row_backward(n, gates + int64_t(b) * 4 * n, c[b], c_next + int64_t(b) * n,
                          dh_next[b], dc_next[b], d_gates + int64_t(b) * 4 * n,
                          d_c + int64_t(b) * n);
    float* dh_rows = d_h + int64_t(first) * n;
    matmul(dh_rows, n, Rows{d_gates + int64_t(first) * 4 * n, 4 * n}, wh, count, 4 * n, n,
           Write::kSet);
  });
  // d wh_t = h^T d_gates, in pieces of its rows, each summed over the whole batch.
  parallel_for(pieces_of(n, kWeightGrain), [&](int index) {
    const auto [first, count] = piece_of(index, n, kWeightGrain);
    outer(d_wh, h, Rows{d_gates, 4 * n}, batch, first, count, 4 * n);
  });
}

class LSTMStepBackward : public CPUPrimitive {
 public:
  using CPUPrimitive::CPUPrimitive;

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs)
      override {
    dispatch(stream(), inputs, outputs, [](auto& in, auto& out) { backward(in, out); });
  }
  const char* name() const override {
    return "LSTMStepBackward";
  }
  bool is_equivalent(const mx::Primitive& other) const override {
    return typeid(*this) == typeid(other);
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return {inputs[0].shape(), inputs[1].shape(), inputs[2].shape(), inputs[3].shape()};
  }

 protected:
  std::shared_ptr<mx::Primitive> clone() override {
    return std::make_shared<LSTMStepBackward>(stream());
  }
  void validate(const std::vector<mx::array>& in) override {
    if (in.size() != 10)
      throw argument_error("lstm_step", "the backward pass takes ten arrays");
    const auto [batch, n] = check_step(in[0], in[1], in[2], in[3]);
    check_transposes("lstm_step", &in[3], &in[9], 1);
    const char* names[] = {"new h", "new c", "gates", "cotangent of h", "cotangent of c"};
    const int cols[] = {n, n, 4 * n, n, n};
    for (int k = 0; k < 5; ++k)
      check_matrix("lstm_step", in[4 + k], names[k], batch, cols[k]);
  }
};

class LSTMStep : public CPUPrimitive {
 public:
  using CPUPrimitive::CPUPrimitive;

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs)
      override {
    dispatch(stream(), inputs, outputs, [](auto& in, auto& out) { forward(in, out); });
  }
  std::vector<mx::array> vjp(
      const std::vector<mx::array>& primals,
      const std::vector<mx::array>& cotangents,
      const std::vector<int>& argnums,
      const std::vector<mx::array>& outputs) override {
    std::vector<mx::array> inputs(primals);
    inputs.insert(inputs.end(), outputs.begin(), outputs.end());
    inputs.push_back(cotangents[0]);
    inputs.push_back(cotangents[1]);
    inputs.push_back(transposed_copy(primals[3], stream()));
    return cotangents_of(primals, argnums, std::make_shared<LSTMStepBackward>(stream()),
                         std::move(inputs));
  }
  const char* name() const override {
    return "LSTMStep";
  }
  bool is_equivalent(const mx::Primitive& other) const override {
    return typeid(*this) == typeid(other);
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return {inputs[1].shape(), inputs[1].shape(), inputs[0].shape()};
  }

 protected:
  std::shared_ptr<mx::Primitive> clone() override {
    return std::make_shared<LSTMStep>(stream());
  }
  void validate(const std::vector<mx::array>& in) override {
    if (in.size() != 4)
      throw argument_error("lstm_step", "takes z, h, c and wh_t");
    check_step(in[0], in[1], in[2], in[3]);
  }
};

} // namespace

std::vector<mx::array> lstm_step(
    const mx::array& z,
    const mx::array& h,
    const mx::array& c,
    const mx::array& wh_t) {
  check_step(z, h, c, wh_t);
  const mx::Stream stream = mx::default_stream(mx::Device::cpu);
  auto outputs = mx::array::make_arrays(
      {h.shape(), h.shape(), z.shape()}, {mx::float32, mx::float32, mx::float32},
      std::make_shared<LSTMStep>(stream), {z, h, c, wh_t});
  return {outputs[0], outputs[1]};
}

void lstm_step_direct(
    const mx::array& z,
    const mx::array& h,
    const mx::array& c,
    const mx::array& wh_t,
    mx::array& h_out,
    mx::array& c_out) {
  const auto [batch, n] = check_step(z, h, c, wh_t);
  check_matrix("lstm_step", h_out, "h_out", batch, n);
  check_matrix("lstm_step", c_out, "c_out", batch, n);
  std::vector<mx::array> outputs{h_out, c_out, allocated({batch, 4 * n})};
  forward({z, h, c, wh_t}, outputs);
}

} // namespace ncps
