// The LTC cell's semi-implicit ODE step as one MLX primitive for the CPU.
//
// Graph-level MLX pays about 2.5 us per operation on the CPU and an LTC step is 57 of
// them (244 when differentiated): far more than the arithmetic. This primitive runs all
// ODE unfolds of one time step in one call, evaluates the sigmoid of the wiring's
// synapses only (a gather by presynaptic index, a scatter into the postsynaptic sums),
// and has a hand-written backward pass that recomputes the unfolds instead of keeping
// their synapse grids alive. Built on first use by ncps_mlx.kernels (see build.py).
//
// Per unfold, for neurons j and synapses s = (i -> j):
//   a_s = sigmoid(sigma_s * (v_i - mu_s))
//   v_j <- (cm_j v_j + n_j + sum_s w_erev_s a_s) / (cm_j + d_j + sum_s w_s a_s)
// with cm = C_m / (dt / unfolds), n = g_l v_l + sensory numerator and
// d = g_l + sensory denominator + epsilon, all (B, N) and fixed over the step.
// Internally the state is neuron-major (N, B), so every synapse is a loop over the batch.
//
// Samples are independent: the batch is cut into pieces of a fixed size, each a small
// problem with its own neuron-major buffers, run on the pool (parallel.h) through all
// unfolds. A piece sums its synapses' gradients over its samples; the pieces' sums are
// then added in piece order. So any thread count gives the same bits.

#include <typeinfo>

#include "common.h"
#include "parallel.h"

namespace ncps {
namespace {

// The samples of a piece have a fixed count, so the pieces do not depend on the thread
// count; a piece's loops over its samples are whole vectors.
constexpr int kBatchGrain = 16;

// The samples `part` of a (B, N) input, possibly a broadcast or other strided view, as a
// dense (N, count) buffer.
std::vector<float> neuron_major(const mx::array& a, Piece part) {
  const int neurons = a.shape(1);
  const int64_t row = a.strides()[0], col = a.strides()[1];
  const float* data = a.data<float>();
  std::vector<float> out(size_t(part.count) * neurons);
  for (int x = 0; x < part.count; ++x)
    for (int k = 0; k < neurons; ++k)
      out[size_t(k) * part.count + x] = data[(part.first + x) * row + k * col];
  return out;
}

std::vector<float> neuron_major(const mx::array& a) {
  return neuron_major(a, {0, a.shape(0)});
}

// A dense (N, count) buffer into the rows `part` of the (B, N) output `out`.
void batch_major(const std::vector<float>& in, mx::array& out, Piece part) {
  const int neurons = out.shape(1);
  float* data = out.data<float>();
  for (int x = 0; x < part.count; ++x)
    for (int k = 0; k < neurons; ++k)
      data[int64_t(part.first + x) * neurons + k] = in[size_t(k) * part.count + x];
}

void batch_major(const std::vector<float>& in, mx::array& out) {
  batch_major(in, out, {0, out.shape(0)});
}

// A (S,) input read in place, or copied to a dense buffer when strided.
template <class T>
class Vector {
 public:
  explicit Vector(const mx::array& a) : data_(a.data<T>()) {
    const int64_t stride = a.strides()[0];
    if (stride == 1)
      return;
    buffer_.resize(a.size());
    for (size_t s = 0; s < buffer_.size(); ++s)
      buffer_[s] = data_[s * stride];
    data_ = buffer_.data();
  }
  Vector(const Vector&) = delete;
  Vector& operator=(const Vector&) = delete;

  const T& operator[](size_t s) const {
    return data_[s];
  }
  const T* data() const {
    return data_;
  }

 private:
  const T* data_;
  std::vector<T> buffer_;
};

// The synapses from `a` on: pre, post, sigma, mu, w, w_erev.
struct Synapses {
  explicit Synapses(const mx::array* a)
      : pre(a[0]), post(a[1]), sigma(a[2]), mu(a[3]), w(a[4]), w_erev(a[5]),
        count(int(a[0].size())) {}

  Vector<int32_t> pre, post;
  Vector<float> sigma, mu, w, w_erev;
  int count;
};

struct Step {
  int batch, neurons, unfolds;
  std::vector<float> cm, n, d; // (N, B)
};

// One sample's presynaptic potential per synapse, v[pre[s]], by scalar loads: a vector
// gather is several times slower on recent x86 cores (and NEON has none), so the
// compilers are told not to make one.
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
void presynaptic(int count, const int32_t* __restrict__ pre, const float* __restrict__ v,
                 float* __restrict__ out) {
#if defined(__clang__)
#pragma clang loop vectorize(disable)
#endif
  for (int s = 0; s < count; ++s)
    out[s] = v[pre[s]];
}

// The activations a_s = sigmoid(sigma_s (v_s - mu_s)) of one sample, in place over its
// presynaptic potentials `act`, vectorised over the synapses.
void activations(int count, const float* __restrict__ sigma, const float* __restrict__ mu,
                 float* __restrict__ act) {
  for (int s = 0; s < count; ++s)
    act[s] = sigmoid(sigma[s] * (act[s] - mu[s]));
}

// Adds each synapse's w_erev a and w a to its postsynaptic `num` and `den` (N, B), for
// presynaptic potentials `v` (pre, B); the activations a go to `act` (S, B). A single
// sample (a controller's step) has no batch to vectorise over: its activations are
// vectorised over the synapses instead, then added in the same order.
void add_synapses(
    const Synapses& syn, const float* v, float* num, float* den, float* act, int b) {
  if (b == 1) {
    presynaptic(syn.count, syn.pre.data(), v, act);
    activations(syn.count, syn.sigma.data(), syn.mu.data(), act);
    for (int s = 0; s < syn.count; ++s) {
      num[syn.post[s]] += syn.w_erev[s] * act[s];
      den[syn.post[s]] += syn.w[s] * act[s];
    }
    return;
  }
  for (int s = 0; s < syn.count; ++s) {
    const float* vi = v + syn.pre[s] * b;
    float* nj = num + syn.post[s] * b;
    float* dj = den + syn.post[s] * b;
    float* as = act + s * b;
    const float sigma = syn.sigma[s], mu = syn.mu[s], w = syn.w[s], we = syn.w_erev[s];
    for (int x = 0; x < b; ++x) {
      const float a = sigmoid(sigma * (vi[x] - mu));
      as[x] = a;
      nj[x] += we * a;
      dj[x] += w * a;
    }
  }
}

// One unfold: `v` (N, B) -> `next`. The synapse activations are left in `act` (S, B) and
// the denominators in `den` (N, B), which the backward pass reuses.
void unfold(
    const Step& st,
    const Synapses& syn,
    const float* v,
    float* next,
    float* num,
    float* den,
    float* act) {
  const int nb = st.neurons * st.batch, b = st.batch;
  for (int k = 0; k < nb; ++k) {
    num[k] = st.cm[k] * v[k] + st.n[k];
    den[k] = st.cm[k] + st.d[k];
  }
  add_synapses(syn, v, num, den, act, b);
  for (int k = 0; k < nb; ++k)
    next[k] = num[k] / den[k];
}

// The step's fixed terms for the samples `part`.
Step load_step(const std::vector<mx::array>& in, int unfolds, Piece part) {
  return {part.count, in[0].shape(1), unfolds, neuron_major(in[1], part),
          neuron_major(in[2], part), neuron_major(in[3], part)};
}

// All unfolds for the samples `part`, into their rows of `out`.
void forward_piece(const std::vector<mx::array>& in, const Synapses& syn, mx::array& out,
                   int unfolds, Piece part) {
  const Step st = load_step(in, unfolds, part);
  const size_t size = size_t(st.batch) * st.neurons;
  std::vector<float> v = neuron_major(in[0], part), next(size), num(size), den(size),
                     act(size_t(syn.count) * st.batch);
  for (int u = 0; u < unfolds; ++u) {
    unfold(st, syn, v.data(), next.data(), num.data(), den.data(), act.data());
    std::swap(v, next);
  }
  batch_major(v, out, part);
}

void forward(const std::vector<mx::array>& in, mx::array& out, int unfolds) {
  const Synapses syn(in.data() + 4);
  const int batch = in[0].shape(0);
  parallel_for(pieces_of(batch, kBatchGrain), [&](int piece) {
    forward_piece(in, syn, out, unfolds, piece_of(piece, batch, kBatchGrain));
  });
}

// Back through one unfold's division v' = num / den, for every (neuron, sample): the
// cotangents of num and den from that of v', and what flows to v, cm, n and d. A
// function of its own so that its pointers are __restrict__ and the loop vectorises.
void neurons_backward(size_t size, const float* __restrict__ g, const float* __restrict__ den,
                      const float* __restrict__ next, const float* __restrict__ v,
                      const float* __restrict__ cm, float* __restrict__ dnum,
                      float* __restrict__ dden, float* __restrict__ dv, float* __restrict__ dcm,
                      float* __restrict__ dn, float* __restrict__ dd) {
  for (size_t k = 0; k < size; ++k) {
    dnum[k] = g[k] / den[k];
    dden[k] = -dnum[k] * next[k];
    dv[k] = dnum[k] * cm[k];
    dcm[k] += dnum[k] * v[k] + dden[k];
    dn[k] += dnum[k];
    dd[k] += dden[k];
  }
}

// Reverse-mode through the unfolds for the samples `part`: their rows of the cotangents
// of v, cm, n, d, and into `sums` (4 x S) the sums over them of the cotangents of sigma,
// mu, w and w_erev.
void backward_piece(const std::vector<mx::array>& in, const Synapses& syn,
                    std::vector<mx::array>& out, float* sums, int unfolds, Piece part) {
  const Step st = load_step(in, unfolds, part);
  const int b = st.batch;
  const size_t size = size_t(b) * st.neurons, slots = size_t(syn.count) * b;
  // Forward again, keeping each unfold's potentials, denominators and activations.
  std::vector<float> vs((unfolds + 1) * size), dens(unfolds * size), acts(unfolds * slots);
  std::vector<float> num(size), v0 = neuron_major(in[0], part);
  std::copy(v0.begin(), v0.end(), vs.begin());
  for (int u = 0; u < unfolds; ++u) {
    float* v = vs.data() + u * size;
    unfold(st, syn, v, v + size, num.data(), dens.data() + u * size, acts.data() + u * slots);
  }
  std::vector<float> g = neuron_major(in[10], part), dv(size), dcm(size, 0.f), dn(size, 0.f),
                     dd(size, 0.f);
  std::vector<float> dnum(size), dden(size);
  // Per (synapse, sample) partial sums, reduced over the samples at the end.
  std::vector<float> dsigma(slots, 0.f), dmu(slots, 0.f), dw(slots, 0.f), dwe(slots, 0.f);
  for (int u = unfolds - 1; u >= 0; --u) {
    const float* v = vs.data() + u * size;
    const float* next = v + size;
    const float* den = dens.data() + u * size;
    neurons_backward(size, g.data(), den, next, v, st.cm.data(), dnum.data(), dden.data(),
                     dv.data(), dcm.data(), dn.data(), dd.data());
    for (int s = 0; s < syn.count; ++s) {
      const size_t i = size_t(syn.pre[s]) * b, j = size_t(syn.post[s]) * b, o = size_t(s) * b;
      const float sigma = syn.sigma[s], mu = syn.mu[s], w = syn.w[s], we = syn.w_erev[s];
      const float* a = acts.data() + u * slots + o;
      for (int x = 0; x < b; ++x) {
        const float gn = dnum[j + x], gd = dden[j + x], as = a[x];
        dwe[o + x] += gn * as;
        dw[o + x] += gd * as;
        const float dz = (gn * we + gd * w) * as * (1.f - as);
        dsigma[o + x] += dz * (v[i + x] - mu);
        dmu[o + x] -= dz * sigma;
        dv[i + x] += dz * sigma;
      }
    }
    std::swap(g, dv);
  }
  const std::vector<float>* per_neuron[] = {&g, &dcm, &dn, &dd};
  for (int k = 0; k < 4; ++k)
    batch_major(*per_neuron[k], out[k], part);
  const std::vector<float>* per_synapse[] = {&dsigma, &dmu, &dw, &dwe};
  for (int k = 0; k < 4; ++k)
    for (int s = 0; s < syn.count; ++s) {
      float sum = 0.f;
      for (int x = 0; x < b; ++x)
        sum += (*per_synapse[k])[size_t(s) * b + x];
      sums[size_t(k) * syn.count + s] = sum;
    }
}

// Reverse-mode through the unfolds. Outputs: the cotangents of v, cm, n, d (B, N) and of
// sigma, mu, w, w_erev (S,), given the cotangent `in[10]` of the step's result.
void backward(const std::vector<mx::array>& in, std::vector<mx::array>& out, int unfolds) {
  const Synapses syn(in.data() + 4);
  const int batch = in[0].shape(0), pieces = pieces_of(batch, kBatchGrain);
  const size_t per_piece = size_t(4) * syn.count;
  std::vector<float> sums(pieces * per_piece);
  parallel_for(pieces, [&](int piece) {
    backward_piece(in, syn, out, sums.data() + piece * per_piece, unfolds,
                   piece_of(piece, batch, kBatchGrain));
  });
  for (int k = 0; k < 4; ++k) {
    float* total = out[4 + k].data<float>();
    for (int s = 0; s < syn.count; ++s) {
      float sum = 0.f;
      for (int piece = 0; piece < pieces; ++piece)
        sum += sums[piece * per_piece + size_t(k) * syn.count + s];
      total[s] = sum;
    }
  }
}

// The backward pass's outputs: the state's shape for v, cm, n and d, then the synapses'
// for sigma, mu, w and w_erev.
std::vector<mx::Shape> gradient_shapes(const std::vector<mx::array>& inputs) {
  const auto per_neuron = inputs[0].shape(), per_synapse = inputs[6].shape();
  return {per_neuron, per_neuron, per_neuron, per_neuron,
          per_synapse, per_synapse, per_synapse, per_synapse};
}

// Throws unless `synapses` (pre, post, then four float32 values) are (S,) vectors whose
// indices lie in [0, sources) and [0, targets), and a batch of `batch` fits the buffers
// of a pass over them (`passes` of them kept at once).
void check_synapses(const char* op, const mx::array* synapses, int sources, int targets,
                    int batch, int64_t passes) {
  const int count = synapses[0].ndim() == 1 ? synapses[0].shape(0) : -1;
  const char* names[] = {"pre", "post", "sigma", "mu", "w", "w_erev"};
  for (int k = 2; k < 6; ++k)
    if (synapses[k].ndim() != 1 || synapses[k].shape(0) != count ||
        synapses[k].dtype() != mx::float32)
      throw argument_error(op, std::string("synapse '") + names[k] +
                                   "' must be float32 of the indices' shape (S,)");
  check_indices(op, synapses[0], "pre", sources);
  check_indices(op, synapses[1], "post", targets);
  if (synapses[1].shape(0) != count)
    throw argument_error(op, "'pre' and 'post' must have the same length");
  checked_size(op, "the synapse activations (unfolds x S x B)", {passes, count, batch});
}

// Throws unless `in` (v, cm, numerator, denominator, then the synapses) is a step the
// kernel can run `unfolds` times, keeping `passes` unfolds' values (the backward pass).
void check_step(const std::vector<mx::array>& in, int unfolds, int64_t passes) {
  if (in.size() != 10)
    throw argument_error("ltc_step", "needs v, cm, numerator, denominator and six synapse arrays");
  if (unfolds < 1)
    throw argument_error("ltc_step", "'unfolds' must be >= 1");
  const int batch = in[0].ndim() == 2 ? in[0].shape(0) : 0;
  const int neurons = in[0].ndim() == 2 ? in[0].shape(1) : 0;
  const char* names[] = {"v", "cm", "numerator", "denominator"};
  for (int k = 0; k < 4; ++k)
    check_matrix("ltc_step", in[k], names[k], batch, neurons);
  checked_size("ltc_step", "the state (unfolds x B x N)", {passes + 1, batch, neurons});
  check_synapses("ltc_step", in.data() + 4, neurons, neurons, batch, passes);
}

// What the forward and backward primitives share: the unfold count, equivalence by it
// (for the compiler's common subexpressions).
class Unfolding : public CPUPrimitive {
 public:
  Unfolding(mx::Stream stream, int unfolds) : CPUPrimitive(stream), unfolds_(unfolds) {}

  bool is_equivalent(const mx::Primitive& other) const override {
    const auto* same = dynamic_cast<const Unfolding*>(&other);
    return same && typeid(*this) == typeid(other) && same->unfolds_ == unfolds_;
  }

 protected:
  int unfolds_;
};

class LTCStepBackward : public Unfolding {
 public:
  using Unfolding::Unfolding;

 protected:
  void validate(const std::vector<mx::array>& in) override {
    check_step({in.begin(), in.begin() + 10}, unfolds_, unfolds_);
    check_matrix("ltc_step", in[10], "cotangent", in[0].shape(0), in[0].shape(1));
  }

 public:
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs)
      override {
    const int unfolds = unfolds_;
    dispatch(stream(), inputs, outputs, [unfolds](auto& in, auto& out) {
      backward(in, out, unfolds);
    });
  }
  const char* name() const override {
    return "LTCStepBackward";
  }
  std::shared_ptr<mx::Primitive> clone() override {
    return std::make_shared<LTCStepBackward>(stream(), unfolds_);
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return gradient_shapes(inputs);
  }
};

class LTCStep : public Unfolding {
 public:
  using Unfolding::Unfolding;

 protected:
  void validate(const std::vector<mx::array>& in) override {
    check_step(in, unfolds_, 1);
  }

 public:
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs)
      override {
    const int unfolds = unfolds_;
    dispatch(stream(), inputs, outputs, [unfolds](auto& in, auto& out) {
      forward(in, out[0], unfolds);
    });
  }
  std::vector<mx::array> vjp(
      const std::vector<mx::array>& primals,
      const std::vector<mx::array>& cotangents,
      const std::vector<int>& argnums,
      const std::vector<mx::array>&) override {
    check_step(primals, unfolds_, unfolds_); // the backward pass keeps every unfold
    std::vector<mx::array> inputs(primals);
    inputs.push_back(cotangents[0]);
    auto grads = mx::array::make_arrays(
        gradient_shapes(primals),
        std::vector<mx::Dtype>(8, mx::float32),
        std::make_shared<LTCStepBackward>(stream(), unfolds_),
        inputs);
    // Inputs 0-3 are per neuron, 4-5 the synapse indices (not differentiable), 6-9
    // the synapse parameters.
    std::vector<mx::array> result;
    for (int arg : argnums) {
      if (arg < 4)
        result.push_back(grads[arg]);
      else if (arg < 6)
        result.push_back(mx::zeros_like(primals[arg], stream()));
      else
        result.push_back(grads[arg - 2]);
    }
    return result;
  }
  const char* name() const override {
    return "LTCStep";
  }
  std::shared_ptr<mx::Primitive> clone() override {
    return std::make_shared<LTCStep>(stream(), unfolds_);
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return {inputs[0].shape()};
  }
};

} // namespace

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
    int unfolds) {
  std::vector<mx::array> inputs{v, cm, numerator, denominator, pre, post, sigma, mu, w, w_erev};
  check_step(inputs, unfolds, 1);
  const mx::Stream stream = mx::default_stream(mx::Device::cpu);
  return mx::array(v.shape(), mx::float32, std::make_shared<LTCStep>(stream, unfolds), inputs);
}

void ltc_step_direct(const std::vector<mx::array>& inputs, int unfolds, mx::array& out) {
  check_step(inputs, unfolds, 1);
  check_matrix("ltc_step", out, "out", inputs[0].shape(0), inputs[0].shape(1));
  forward(inputs, out, unfolds);
}

void synapse_sums_direct(
    const mx::array& x,
    const std::vector<mx::array>& synapses,
    mx::array& numerator,
    mx::array& denominator) {
  if (x.ndim() != 2 || numerator.ndim() != 2)
    throw argument_error("synapse_sums", "'x' (B, F) and the outputs (B, N) must be matrices");
  const int batch = x.shape(0), features = x.shape(1), neurons = numerator.shape(1);
  check_matrix("synapse_sums", x, "x", batch, features);
  check_matrix("synapse_sums", numerator, "numerator", batch, neurons);
  check_matrix("synapse_sums", denominator, "denominator", batch, neurons);
  if (synapses.size() != 6)
    throw argument_error("synapse_sums", "needs pre, post, sigma, mu, w, w_erev");
  checked_size("synapse_sums", "the outputs (B x N)", {batch, neurons});
  check_synapses("synapse_sums", synapses.data(), features, neurons, batch, 1);
  const Synapses syn(synapses.data());
  std::vector<float> num(size_t(neurons) * batch, 0.f), den(num.size(), 0.f),
      act(size_t(syn.count) * batch);
  add_synapses(syn, neuron_major(x).data(), num.data(), den.data(), act.data(), batch);
  batch_major(num, numerator);
  batch_major(den, denominator);
}

} // namespace ncps
