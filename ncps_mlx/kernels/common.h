// What the fused kernels share: the rational tanh and sigmoid of ncps_mlx.ops, the
// dispatch of work to the CPU stream, a base for CPU-only primitives, and the entry
// points that module.cpp binds.

#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlx/backend/cpu/encoder.h"
#include "mlx/mlx.h"
#include "mlx/primitives.h"

namespace ncps {

namespace mx = mlx::core;

// tanh as the clamped minimax rational function of ncps_mlx.ops (Eigen's and XLA's):
// multiplies, adds and one division, so the batch loops vectorise, and the same values
// as the graph-level path.
// Always inlined: a call inside a loop over a row keeps it from vectorising.
#define NCPS_VECTOR_INLINE inline __attribute__((always_inline))

NCPS_VECTOR_INLINE float rational_tanh(float x) {
  constexpr float clamp = 7.90531110763549805f;
  // Compares, not std::min/max: their references defeat vectorisation in some loops.
  x = x < -clamp ? -clamp : (x > clamp ? clamp : x);
  const float z = x * x;
  float p = -2.76076847742355e-16f;
  p = p * z + 2.00018790482477e-13f;
  p = p * z + -8.60467152213735e-11f;
  p = p * z + 5.12229709037114e-08f;
  p = p * z + 1.48572235717979e-05f;
  p = p * z + 6.37261928875436e-04f;
  p = p * z + 4.89352455891786e-03f;
  float q = 1.19825839466702e-06f;
  q = q * z + 1.18534705686654e-04f;
  q = q * z + 2.26843463243900e-03f;
  q = q * z + 4.89352518554385e-03f;
  return x * p / q;
}

NCPS_VECTOR_INLINE float sigmoid(float x) {
  return 0.5f + 0.5f * rational_tanh(0.5f * x);
}

// Runs `work` on the stream's CPU worker once the inputs are ready (MLX evaluates
// lazily). Inputs may be strided views (broadcasts too): the kernels read them through
// their strides or copy them into dense local buffers, which costs less than a
// graph-level copy.
template <class Work>
void dispatch(
    mx::Stream stream,
    const std::vector<mx::array>& inputs,
    std::vector<mx::array>& outputs,
    Work work) {
  auto& encoder = mx::cpu::get_command_encoder(stream);
  for (const auto& a : inputs)
    encoder.set_input_array(a);
  for (auto& a : outputs) {
    a.set_data(mx::allocator::malloc(a.nbytes()));
    encoder.set_output_array(a);
  }
  std::vector<mx::array> in, out;
  for (const auto& a : inputs)
    in.push_back(mx::array::unsafe_weak_copy(a));
  for (const auto& a : outputs)
    out.push_back(mx::array::unsafe_weak_copy(a));
  encoder.dispatch([in = std::move(in), out = std::move(out), work]() mutable {
    work(in, out);
  });
}

// An uninitialised float32 array in MLX memory, available at once (no graph).
inline mx::array allocated(mx::Shape shape) {
  size_t size = 1;
  for (int d : shape)
    size *= size_t(d);
  return mx::array(mx::allocator::malloc(size * sizeof(float)), std::move(shape), mx::float32);
}

// The most values one buffer of a kernel may hold. MLX's shapes are int32; every size a
// kernel allocates or indexes with is computed in 64 bits and checked against this on
// the calling thread, before any memory is touched.
constexpr int64_t kMaxValues = std::numeric_limits<int32_t>::max();

inline std::invalid_argument argument_error(const char* op, const std::string& what) {
  return std::invalid_argument(std::string("[") + op + "] " + what);
}

// The product of `factors` (each >= 0), or an error naming `what` when it exceeds
// kMaxValues.
inline int64_t checked_size(const char* op, const char* what, std::initializer_list<int64_t> factors) {
  int64_t product = 1;
  for (int64_t factor : factors) {
    if (factor < 0 || (factor > 0 && product > kMaxValues / factor))
      throw argument_error(op, std::string(what) + " is too large: more than 2**31 - 1 values");
    product *= factor;
  }
  return product;
}

// Throws unless `a` is a float32 (rows, cols) matrix.
inline void check_matrix(const char* op, const mx::array& a, const char* name, int rows, int cols) {
  if (a.ndim() != 2 || a.shape(0) != rows || a.shape(1) != cols || a.dtype() != mx::float32)
    throw argument_error(
        op, std::string("'") + name + "' must be float32 of shape (" + std::to_string(rows) +
            ", " + std::to_string(cols) + ")");
}

// Throws unless `index` is an int32 (S,) vector whose values, read through its stride,
// lie in [0, bound). Its values must be available: a traced index (inside mx.compile or
// mx.vmap) cannot be checked, so it is refused.
inline void check_indices(const char* op, const mx::array& index, const char* name, int bound) {
  if (index.ndim() != 1 || index.dtype() != mx::int32)
    throw argument_error(op, std::string("'") + name + "' must be an int32 (S,) vector");
  if (!index.is_available()) {
    try {
      mx::eval(index);
    } catch (const std::exception&) {
      throw argument_error(
          op, std::string("'") + name + "' must hold concrete indices, not values traced " +
              "inside mx.compile or mx.vmap: close over the index arrays instead");
    }
  }
  const int32_t* data = index.data<int32_t>();
  const int64_t stride = index.strides()[0];
  for (int64_t s = 0; s < index.shape(0); ++s)
    if (data[s * stride] < 0 || data[s * stride] >= bound)
      throw argument_error(
          op, std::string("'") + name + "' holds index " + std::to_string(data[s * stride]) +
              " outside [0, " + std::to_string(bound) + ")");
}

// A row-major copy of `a`'s transpose, made in the graph by a backward pass's vjp: the
// gradient through x @ w is d @ w^T, which the micro-kernel reads along rows of w^T.
// Every time step's vjp asks for the same copy, and mx.compile keeps one.
inline mx::array transposed_copy(const mx::array& a, mx::Stream stream) {
  return mx::contiguous(mx::transpose(a, stream), false, stream);
}

// Throws unless each of `transposes` has the shape of the matching `arrays` reversed.
inline void check_transposes(const char* op, const mx::array* arrays, const mx::array* transposes,
                             int count) {
  for (int i = 0; i < count; ++i) {
    auto shape = arrays[i].shape();
    std::reverse(shape.begin(), shape.end());
    if (transposes[i].shape() != shape || transposes[i].dtype() != mx::float32)
      throw argument_error(op, "a transposed weight does not fit its weight");
  }
}

// What a vjp returns when a `backward` primitive computes every primal's cotangent (one
// float32 output of its shape each) from `inputs`: those of `argnums`.
inline std::vector<mx::array> cotangents_of(const std::vector<mx::array>& primals,
                                            const std::vector<int>& argnums,
                                            std::shared_ptr<mx::Primitive> backward,
                                            std::vector<mx::array> inputs) {
  std::vector<mx::Shape> shapes;
  for (const auto& a : primals)
    shapes.push_back(a.shape());
  auto grads = mx::array::make_arrays(std::move(shapes),
                                      std::vector<mx::Dtype>(primals.size(), mx::float32),
                                      std::move(backward), std::move(inputs));
  std::vector<mx::array> result;
  for (int arg : argnums)
    result.push_back(grads[arg]);
  return result;
}

// A primitive with a CPU implementation only.
class CPUPrimitive : public mx::Primitive {
 public:
  using mx::Primitive::Primitive;

  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error(std::string("[ncps_mlx] ") + name() + " runs on the CPU only");
  }

  // mx.vmap runs the primitive once per element of the mapped axis and stacks the
  // results: right whatever is mapped (a weight gradient stays one per element), at the
  // cost of one call per element.
  std::pair<std::vector<mx::array>, std::vector<int>> vmap(
      const std::vector<mx::array>& inputs,
      const std::vector<int>& axes) override {
    int size = 0;
    for (size_t i = 0; i < inputs.size(); ++i)
      if (axes[i] >= 0)
        size = inputs[i].shape(axes[i]);
    std::vector<std::vector<mx::array>> per_output;
    for (int k = 0; k < size; ++k) {
      std::vector<mx::array> slice;
      for (size_t i = 0; i < inputs.size(); ++i)
        slice.push_back(axes[i] >= 0 ? mx::take(inputs[i], k, axes[i]) : inputs[i]);
      validate(slice);
      auto shapes = output_shapes(slice);
      std::vector<mx::Dtype> dtypes(shapes.size(), mx::float32);
      auto outputs = mx::array::make_arrays(std::move(shapes), dtypes, clone(), slice);
      per_output.resize(outputs.size());
      for (size_t o = 0; o < outputs.size(); ++o)
        per_output[o].push_back(outputs[o]);
    }
    std::vector<mx::array> stacked;
    for (const auto& parts : per_output)
      stacked.push_back(mx::stack(parts));
    return {stacked, std::vector<int>(stacked.size(), 0)};
  }

 protected:
  // A primitive computing what this one does, for new outputs.
  virtual std::shared_ptr<mx::Primitive> clone() = 0;
  // Throws unless the primitive may run on `inputs` (each vmapped slice is checked as a
  // call is).
  virtual void validate(const std::vector<mx::array>& inputs) = 0;
};

mx::array ltc_step(
    const mx::array& v,
    const mx::array& cm,
    const mx::array& numerator,
    const mx::array& denominator,
    const mx::array& pre,
    const mx::array& post,
    const mx::array& sigma,
    const mx::array& mu,
    const mx::array& w,
    const mx::array& w_erev,
    int unfolds);

// c + a @ b for matrices a (M, K), b (K, N) and an optional c (N,): any strides.
mx::array addmm(const mx::array& a, const mx::array& b, const std::optional<mx::array>& c);

// The names of cfc_step's modes and activations, indexed by their codes.
std::vector<std::string> cfc_mode_names();
std::vector<std::string> cfc_activation_names();

// One CfC step (projected (B, W), dt (B, 1): returns (B, N)) or a sequence of them
// (projected (B, T, W), dt (B, T, 1): returns the states (B, T, N)). Without
// `keep_cache` the forward pass keeps nothing for a backward pass (which then runs it
// again first).
mx::array cfc_step(
    const mx::array& projected,
    const mx::array& h,
    const mx::array& dt,
    const std::vector<mx::array>& weights,
    const std::vector<int>& layout,
    int mode,
    int activation,
    bool keep_cache);

// A sequence of CfC steps with the mixed-memory LSTM before each: z (B, T, 4N) its
// projected input with its bias, c (B, N) its first memory, wh_t (N, 4N) its weight.
// Returns the states and the LSTM's memories after each step, (B, T, N) each.
std::vector<mx::array> cfc_memory_sequence(
    const mx::array& projected,
    const mx::array& h,
    const mx::array& dt,
    const std::vector<mx::array>& weights,
    const std::vector<int>& layout,
    int mode,
    int activation,
    bool keep_cache,
    const mx::array& z,
    const mx::array& c,
    const mx::array& wh_t);

// The direct forms run the same forward passes at once on the calling thread, without
// MLX's lazy evaluation: no graph, no wake of the stream's worker thread (tens of
// microseconds on a virtual machine, more than a controller's whole step). Their
// inputs are available (evaluated) row-major arrays and they write into available
// row-major outputs that alias no input.

void cfc_step_direct(
    const mx::array& projected,
    const mx::array& h,
    const mx::array& dt,
    const std::vector<mx::array>& weights,
    const std::vector<int>& layout,
    int mode,
    int activation,
    mx::array& out);

// `inputs` as ltc_step takes them: v, cm, numerator, denominator, pre, post, sigma, mu,
// w, w_erev.
void ltc_step_direct(const std::vector<mx::array>& inputs, int unfolds, mx::array& out);

// (sum_s w_erev_s a_s, sum_s w_s a_s) into each synapse's postsynaptic column, with
// a_s = sigmoid(sigma_s (x_pre - mu_s)): an LTC's sensory synapses. `synapses` are pre,
// post, sigma, mu, w, w_erev; the outputs (B, N) are overwritten.
void synapse_sums_direct(
    const mx::array& x,
    const std::vector<mx::array>& synapses,
    mx::array& numerator,
    mx::array& denominator);

// The mixed-memory LSTM step: gates = z + h @ wh_t, split (i, ig, fg, og);
// c' = c sigmoid(fg + 1) + tanh(i) sigmoid(ig), h' = tanh(c') sigmoid(og). Returns
// (h', c'), differentiable in every input.
std::vector<mx::array> lstm_step(
    const mx::array& z,
    const mx::array& h,
    const mx::array& c,
    const mx::array& wh_t);

void lstm_step_direct(
    const mx::array& z,
    const mx::array& h,
    const mx::array& c,
    const mx::array& wh_t,
    mx::array& h_out,
    mx::array& c_out);

} // namespace ncps
