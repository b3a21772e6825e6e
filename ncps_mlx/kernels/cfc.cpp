// A CfC step as one MLX primitive for the CPU: the cell with its backbone, or the chain
// of backbone-free CfC layers of a wiring (an NCP's inter, command and motor layers).
//
// On the CPU a CfC step in MLX operations is 7-18 graph operations on small arrays
// (30-74 when differentiated), each costing more to launch than to compute, and its
// products run on MLX's slow CPU BLAS. Here a step is one call forward and one backward,
// with the products as loops that vectorise along contiguous weight rows.
//
// A chain of units u = 0..U-1 with states h_u (B, n_u), concatenated in h:
//   pre_u = p + h_0 @ Wh_0                        (u = 0: p is the projected input)
//   pre_u = b_u + h'_{u-1} @ Wx_u + h_u @ Wh_u    (u > 0: the previous unit's new state)
//   backbone (k_u >= 1 layers): z = act(pre_u), z = act(b_i + z @ W_i) for i = 1..k-1,
//   heads = c + z @ Wc; without a backbone heads = pre_u
//   h'_u = f1 (1 - g) + g f2   (default),   f1 + g f2   (no_gate),
//          f1 = tanh(heads_ff1), f2 = tanh(heads_ff2), g = sigmoid(heads_a dt + heads_b)
//   h'_u = -A exp(-dt (|w_tau| + |u|)) u + A, u = heads   (pure)
// Matrices are (in, out) like the x @ W products above. The forward pass also returns its
// pre-activations (a "cache"), so the backward pass does not compute the step again.

#include <cmath>
#include <numbers>
#include <string>
#include <typeinfo>

#include "common.h"
#include "dense.h"

namespace ncps {
namespace {

// The codes of the modes and activations; their names, in this order, are
// cfc_mode_names() and cfc_activation_names() (checked against the cells' at load time).
enum Mode { kDefault = 0, kPure = 1, kNoGate = 2 };
enum Activation { kLecunTanh = 0, kTanh = 1, kRelu = 2, kSilu = 3, kGelu = 4 };

// out (k, n) += x^T (k, B) @ d (B, n): a weight's gradient, four samples at a time so
// each row of `out` is loaded and stored once per four.
void outer_add(float* out, Rows x, Rows d, int batch, int k, int n) {
  int b = 0;
  for (; b + 4 <= batch; b += 4) {
    const float *d0 = d[b], *d1 = d[b + 1], *d2 = d[b + 2], *d3 = d[b + 3];
    for (int i = 0; i < k; ++i) {
      const float a0 = x[b][i], a1 = x[b + 1][i], a2 = x[b + 2][i], a3 = x[b + 3][i];
      float* oi = out + size_t(i) * n;
      for (int j = 0; j < n; ++j)
        oi[j] += a0 * d0[j] + a1 * d1[j] + a2 * d2[j] + a3 * d3[j];
    }
  }
  for (; b < batch; ++b) {
    const float* db = d[b];
    for (int i = 0; i < k; ++i) {
      const float a = x[b][i];
      float* oi = out + size_t(i) * n;
      for (int j = 0; j < n; ++j)
        oi[j] += a * db[j];
    }
  }
}

// out (B, k) += d (B, n) @ w^T for w (k, n): the gradient that flows back through a
// product, as dot products along the rows of w (no transposed copy). Sixteen partial
// sums per dot product, so the loop vectorises without reassociating a float sum.
void matmul_transposed_add(float* out, int64_t ldo, Rows d, Rows w, int batch, int k, int n) {
  constexpr int lanes = 16;
  for (int b = 0; b < batch; ++b) {
    const float* db = d[b];
    for (int i = 0; i < k; ++i) {
      const float* wi = w[i];
      float partial[lanes] = {};
      int j = 0;
      for (; j + lanes <= n; j += lanes)
        for (int l = 0; l < lanes; ++l)
          partial[l] += db[j + l] * wi[j + l];
      float sum = 0.f;
      for (; j < n; ++j)
        sum += db[j] * wi[j];
      for (int l = 0; l < lanes; ++l)
        sum += partial[l];
      out[b * ldo + i] += sum;
    }
  }
}

// out (n,) += the column sums of d (B, n): a bias's gradient.
void column_sums_add(float* out, Rows d, int batch, int n) {
  for (int b = 0; b < batch; ++b)
    for (int j = 0; j < n; ++j)
      out[j] += d[b][j];
}

// LeCun's tanh as the reference has it: 1.7159 tanh(0.666 x) (0.666, not 2/3).
constexpr float kLecunScale = 1.7159f, kLecunSlope = 0.666f;

// y = act(x) over `count` values; the switch stays outside the vectorised loops.
void activate(int kind, const float* x, float* y, int count) {
  switch (kind) {
    case kLecunTanh:
      for (int i = 0; i < count; ++i)
        y[i] = kLecunScale * rational_tanh(kLecunSlope * x[i]);
      break;
    case kTanh:
      for (int i = 0; i < count; ++i)
        y[i] = rational_tanh(x[i]);
      break;
    case kRelu:
      for (int i = 0; i < count; ++i)
        y[i] = std::max(x[i], 0.f);
      break;
    case kSilu:
      for (int i = 0; i < count; ++i)
        y[i] = x[i] * sigmoid(x[i]);
      break;
    default: // kGelu, the exact erf form
      for (int i = 0; i < count; ++i)
        y[i] = 0.5f * x[i] * (1.f + std::erf(x[i] * std::numbers::sqrt2_v<float> / 2));
  }
}

// g *= act'(x) over `count` values.
void activate_backward(int kind, const float* x, float* g, int count) {
  switch (kind) {
    case kLecunTanh:
      for (int i = 0; i < count; ++i) {
        const float t = rational_tanh(kLecunSlope * x[i]);
        g[i] *= kLecunScale * kLecunSlope * (1.f - t * t);
      }
      break;
    case kTanh:
      for (int i = 0; i < count; ++i) {
        const float t = rational_tanh(x[i]);
        g[i] *= 1.f - t * t;
      }
      break;
    case kRelu:
      for (int i = 0; i < count; ++i)
        g[i] = x[i] > 0.f ? g[i] : 0.f;
      break;
    case kSilu:
      for (int i = 0; i < count; ++i) {
        const float s = sigmoid(x[i]);
        g[i] *= s * (1.f + x[i] * (1.f - s));
      }
      break;
    default: { // kGelu
      const float density = std::numbers::inv_sqrtpi_v<float> / std::numbers::sqrt2_v<float>;
      for (int i = 0; i < count; ++i) {
        const float cdf = 0.5f * (1.f + std::erf(x[i] * std::numbers::sqrt2_v<float> / 2));
        g[i] *= cdf + x[i] * density * std::exp(-0.5f * x[i] * x[i]);
      }
    }
  }
}

// One unit of the chain and where its parameters are in the input list.
struct Unit {
  int n = 0, layers = 0, width = 0, heads = 0, in = 0;
  int state = 0; // first column of h_u in h
  int64_t cache = 0; // first value of its cache: layers pre-activations, then heads
  int wx = -1, bx = -1, wh = -1, head_w = -1, head_b = -1, tau = -1, amp = -1;
  std::vector<int> hidden_w, hidden_b; // backbone layers 1..k-1

  int64_t segment(int index, int batch) const { // pre_index, or heads at index `layers`
    return cache + int64_t(index) * batch * width;
  }
};

constexpr int kInputs = 3; // projected, h, dt; then the weights

// The chain described by `layout` (n_u, k_u per unit) over the weights' shapes, checked.
std::vector<Unit> units(
    const std::vector<int>& layout,
    const std::vector<mx::array>& weights,
    int mode,
    int batch) {
  if (layout.empty() || layout.size() % 2)
    throw argument_error("cfc_step", "'layout' must be pairs (units, backbone layers)");
  if (batch < 0)
    throw argument_error("cfc_step", "'h' must be a (B, N) matrix");
  std::vector<Unit> chain;
  int next = 0;
  int64_t state = 0, cache = 0;
  auto take = [&](int rows, int cols, const char* what) {
    if (next >= int(weights.size()))
      throw std::invalid_argument(std::string("[cfc_step] missing weight: ") + what);
    const mx::array& a = weights[next];
    const bool vector = rows < 0;
    const bool fits = vector ? (a.ndim() == 1 && a.shape(0) == cols)
                             : (a.ndim() == 2 && a.shape(0) == rows && a.shape(1) == cols);
    if (!fits || a.dtype() != mx::float32)
      throw std::invalid_argument(
          std::string("[cfc_step] weight ") + std::to_string(next) + " (" + what +
          ") must be float32 of shape (" +
          (vector ? std::to_string(cols) + ",)" :
                    std::to_string(rows) + ", " + std::to_string(cols) + ")"));
    return kInputs + next++;
  };
  for (size_t p = 0; p < layout.size(); p += 2) {
    Unit u;
    u.n = layout[p];
    u.layers = layout[p + 1];
    if (u.n < 1 || u.layers < 0)
      throw argument_error("cfc_step", "'layout' needs units >= 1, layers >= 0");
    u.in = chain.empty() ? 0 : chain.back().n;
    // 64-bit and checked: 4 n overflows an int for a large enough n.
    u.heads = int(checked_size("cfc_step", "a unit's heads", {mode == kPure ? 1 : 4, u.n}));
    // The first matrix's width: the backbone's, or the heads' without one.
    const int wh_at = next + (u.in ? 2 : 0);
    if (wh_at >= int(weights.size()) || weights[wh_at].ndim() != 2)
      throw std::invalid_argument("[cfc_step] missing weight: Wh");
    u.width = u.layers ? weights[wh_at].shape(1) : u.heads;
    if (u.in) {
      u.wx = take(u.in, u.width, "Wx");
      u.bx = take(-1, u.width, "bx");
    }
    u.wh = take(u.n, u.width, "Wh");
    for (int i = 1; i < u.layers; ++i) {
      u.hidden_w.push_back(take(u.width, u.width, "backbone W"));
      u.hidden_b.push_back(take(-1, u.width, "backbone b"));
    }
    if (u.layers) {
      u.head_w = take(u.width, u.heads, "heads W");
      u.head_b = take(-1, u.heads, "heads b");
    }
    if (mode == kPure) {
      u.tau = take(1, u.n, "w_tau");
      u.amp = take(1, u.n, "A");
    }
    u.state = int(state);
    u.cache = cache;
    state = checked_size("cfc_step", "the state", {state + u.n});
    // Per sample: each backbone layer's pre-activations, then the heads.
    const int64_t values = checked_size("cfc_step", "a unit's layers", {u.layers, u.width}) +
        u.heads;
    cache = checked_size("cfc_step", "the cache (B x values per sample)", {batch, values}) + cache;
    checked_size("cfc_step", "the cache (B x values per sample)", {cache});
    chain.push_back(std::move(u));
  }
  if (next != int(weights.size()))
    throw std::invalid_argument(
        "[cfc_step] " + std::to_string(weights.size() - next) + " weights too many");
  return chain;
}

int64_t cache_size(const std::vector<Unit>& chain, int batch) {
  const Unit& last = chain.back();
  return last.cache + int64_t(batch) * (int64_t(last.layers) * last.width + last.heads);
}

// Writes h'_u (B, n) into out's columns, given the unit's heads (B, heads) dense.
void solve(const Unit& u, int mode, const float* heads, const std::vector<mx::array>& in,
           float* out, int64_t ldo, int batch) {
  const mx::array& dt = in[2];
  const int64_t dt_ld = dt.strides()[0];
  const int n = u.n;
  std::vector<float> tau_buffer, amp_buffer;
  const float* w_tau = mode == kPure ? rows(in[u.tau], tau_buffer)[0] : nullptr;
  const float* amp = mode == kPure ? rows(in[u.amp], amp_buffer)[0] : nullptr;
  for (int b = 0; b < batch; ++b) {
    const float t = dt.data<float>()[b * dt_ld];
    const float* hb = heads + int64_t(b) * u.heads;
    float* o = out + b * ldo + u.state;
    if (mode == kPure) {
      for (int j = 0; j < n; ++j) {
        const float decay = std::exp(-t * (std::fabs(w_tau[j]) + std::fabs(hb[j])));
        o[j] = -amp[j] * decay * hb[j] + amp[j];
      }
      continue;
    }
    for (int j = 0; j < n; ++j) {
      const float f1 = rational_tanh(hb[j]), f2 = rational_tanh(hb[n + j]);
      const float g = sigmoid(hb[2 * n + j] * t + hb[3 * n + j]);
      o[j] = mode == kNoGate ? f1 + g * f2 : f1 * (1.f - g) + g * f2;
    }
  }
}

// The forward pass: `out[0]` the new state (B, N), `out[1]` the cache.
void forward(const std::vector<mx::array>& in, std::vector<mx::array>& out,
             const std::vector<Unit>& chain, int mode, int activation) {
  const int batch = in[1].shape(0), width = in[1].shape(1);
  std::vector<float> hbuf, pbuf, wbuf, bbuf, z;
  const Rows h = rows(in[1], hbuf);
  float* next = out[0].data<float>();
  float* cache = out[1].data<float>();
  for (const Unit& u : chain) {
    float* pre = cache + u.segment(0, batch);
    if (u.in == 0) {
      const Rows p = rows(in[0], pbuf);
      for (int b = 0; b < batch; ++b)
        std::copy(p[b], p[b] + u.width, pre + int64_t(b) * u.width);
    } else {
      fill_rows(pre, u.width, rows(in[u.bx], bbuf), batch, u.width);
      const Rows previous{next + (u.state - u.in), width};
      matmul_add(pre, u.width, previous, rows(in[u.wx], wbuf), batch, u.in, u.width);
    }
    matmul_add(pre, u.width, Rows{h.data + u.state, h.ld}, rows(in[u.wh], wbuf), batch, u.n,
               u.width);
    float* heads = pre;
    if (u.layers) {
      z.resize(size_t(batch) * u.width);
      for (int i = 1; i <= u.layers; ++i) {
        activate(activation, cache + u.segment(i - 1, batch), z.data(), batch * u.width);
        const bool last = i == u.layers;
        const int cols = last ? u.heads : u.width;
        const int w = last ? u.head_w : u.hidden_w[i - 1], b = last ? u.head_b : u.hidden_b[i - 1];
        float* target = cache + u.segment(i, batch);
        fill_rows(target, cols, rows(in[b], bbuf), batch, cols);
        matmul_add(target, cols, Rows{z.data(), u.width}, rows(in[w], wbuf), batch, u.width,
                   cols);
      }
      heads = cache + u.segment(u.layers, batch);
    }
    solve(u, mode, heads, in, next, width, batch);
  }
}

// d_heads (B, heads) from the new state's cotangent `g` (B, n) of a unit; adds to the
// cotangents of dt, w_tau and A.
void solve_backward(const Unit& u, int mode, const float* heads, Rows g,
                    const std::vector<mx::array>& in, std::vector<mx::array>& out,
                    float* d_heads, int batch) {
  const mx::array& dt = in[2];
  const int64_t dt_ld = dt.strides()[0];
  float* d_dt = out[2].data<float>();
  const int n = u.n;
  std::vector<float> tau_buffer, amp_buffer;
  const float* w_tau = mode == kPure ? rows(in[u.tau], tau_buffer)[0] : nullptr;
  const float* amp = mode == kPure ? rows(in[u.amp], amp_buffer)[0] : nullptr;
  float* d_tau = mode == kPure ? out[u.tau].data<float>() : nullptr;
  float* d_amp = mode == kPure ? out[u.amp].data<float>() : nullptr;
  for (int b = 0; b < batch; ++b) {
    const float t = dt.data<float>()[b * dt_ld];
    const float* hb = heads + int64_t(b) * u.heads;
    float* dh = d_heads + int64_t(b) * u.heads;
    const float* gb = g[b];
    float d_t = 0.f;
    if (mode == kPure) {
      for (int j = 0; j < n; ++j) {
        const float a = amp[j], x = hb[j], w = w_tau[j];
        const float rate = std::fabs(w) + std::fabs(x), decay = std::exp(-t * rate);
        const float sign_x = float((x > 0.f) - (x < 0.f)), sign_w = float((w > 0.f) - (w < 0.f));
        // h' = -a decay x + a, decay = exp(-t (|w| + |x|))
        dh[j] = -gb[j] * a * decay * (1.f - t * x * sign_x);
        d_amp[j] += gb[j] * (1.f - decay * x);
        d_tau[j] += gb[j] * a * x * decay * t * sign_w;
        d_t += gb[j] * a * x * decay * rate;
      }
    } else {
      for (int j = 0; j < n; ++j) {
        const float f1 = rational_tanh(hb[j]), f2 = rational_tanh(hb[n + j]);
        const float a = hb[2 * n + j];
        const float gate = sigmoid(a * t + hb[3 * n + j]);
        const float keep = mode == kNoGate ? 1.f : 1.f - gate;
        const float d_gate = gb[j] * (mode == kNoGate ? f2 : f2 - f1);
        const float d_z = d_gate * gate * (1.f - gate);
        dh[j] = gb[j] * keep * (1.f - f1 * f1);
        dh[n + j] = gb[j] * gate * (1.f - f2 * f2);
        dh[2 * n + j] = d_z * t;
        dh[3 * n + j] = d_z;
        d_t += d_z * a;
      }
    }
    d_dt[b] += d_t;
  }
}

// The backward pass. Inputs: the primals, the forward outputs (new state, cache) and
// the new state's cotangent. Outputs: the primals' cotangents.
void backward(const std::vector<mx::array>& in, std::vector<mx::array>& out,
              const std::vector<Unit>& chain, int mode, int activation) {
  const int count = int(out.size());
  const int batch = in[1].shape(0), width = in[1].shape(1);
  for (auto& a : out)
    std::fill_n(a.data<float>(), a.size(), 0.f);
  std::vector<float> hbuf, gbuf, wbuf;
  const Rows h = rows(in[1], hbuf);
  const float* next = in[count].data<float>();
  const float* cache = in[count + 1].data<float>();
  // The new state's cotangent, to which each unit adds what flows into its input.
  const Rows cotangent = rows(in[count + 2], gbuf);
  std::vector<float> g(size_t(batch) * width);
  for (int b = 0; b < batch; ++b)
    std::copy(cotangent[b], cotangent[b] + width, g.data() + int64_t(b) * width);
  float* d_h = out[1].data<float>();
  std::vector<float> d_heads, d_z, z;
  for (auto u = chain.rbegin(); u != chain.rend(); ++u) {
    const float* heads = cache + u->segment(u->layers, batch);
    d_heads.assign(size_t(batch) * u->heads, 0.f);
    solve_backward(*u, mode, heads, Rows{g.data() + u->state, width}, in, out, d_heads.data(),
                   batch);
    // Back through the heads and the backbone: d_heads becomes d_pre (B, width) of the
    // first layer.
    for (int i = u->layers; i >= 1; --i) {
      const bool last = i == u->layers;
      const int cols = last ? u->heads : u->width;
      const int w = last ? u->head_w : u->hidden_w[i - 1], b = last ? u->head_b : u->hidden_b[i - 1];
      const float* before = cache + u->segment(i - 1, batch);
      z.resize(size_t(batch) * u->width);
      activate(activation, before, z.data(), batch * u->width);
      const Rows d{d_heads.data(), cols};
      column_sums_add(out[b].data<float>(), d, batch, cols);
      outer_add(out[w].data<float>(), Rows{z.data(), u->width}, d, batch, u->width, cols);
      d_z.assign(size_t(batch) * u->width, 0.f);
      matmul_transposed_add(d_z.data(), u->width, d, rows(in[w], wbuf), batch, u->width, cols);
      activate_backward(activation, before, d_z.data(), batch * u->width);
      std::swap(d_heads, d_z);
    }
    const Rows d{d_heads.data(), u->width};
    const Rows h_u{h.data + u->state, h.ld};
    outer_add(out[u->wh].data<float>(), h_u, d, batch, u->n, u->width);
    matmul_transposed_add(d_h + u->state, width, d, rows(in[u->wh], wbuf), batch, u->n, u->width);
    if (u->in == 0) {
      float* d_projected = out[0].data<float>();
      for (int b = 0; b < batch; ++b)
        std::copy(d[b], d[b] + u->width, d_projected + int64_t(b) * u->width);
      continue;
    }
    const Rows previous{next + (u->state - u->in), width};
    outer_add(out[u->wx].data<float>(), previous, d, batch, u->in, u->width);
    column_sums_add(out[u->bx].data<float>(), d, batch, u->width);
    matmul_transposed_add(g.data() + (u->state - u->in), width, d, rows(in[u->wx], wbuf), batch,
                          u->in, u->width);
  }
}

// The chain of a call, its arguments checked against it.
std::vector<Unit> checked_chain(
    const mx::array& projected,
    const mx::array& h,
    const mx::array& dt,
    const std::vector<mx::array>& weights,
    const std::vector<int>& layout,
    int mode,
    int activation) {
  if (mode < kDefault || mode > kNoGate || activation < kLecunTanh || activation > kGelu)
    throw argument_error("cfc_step", "unknown mode or activation code");
  const int batch = h.ndim() == 2 ? h.shape(0) : -1;
  auto chain = units(layout, weights, mode, batch);
  int width = 0;
  for (const Unit& u : chain)
    width += u.n;
  if (batch < 1)
    throw argument_error("cfc_step", "'h' must be (B, N) with B >= 1");
  check_matrix("cfc_step", h, "h", batch, width);
  check_matrix("cfc_step", projected, "projected", batch, chain.front().width);
  check_matrix("cfc_step", dt, "dt", batch, 1);
  return chain;
}

// What the forward and backward primitives share: the chain's layout, mode and
// activation, and equivalence by them (for the compiler's common subexpressions).
class Chain : public CPUPrimitive {
 public:
  Chain(mx::Stream stream, std::vector<int> layout, int mode, int activation)
      : CPUPrimitive(stream), layout_(std::move(layout)), mode_(mode), activation_(activation) {}

  bool is_equivalent(const mx::Primitive& other) const override {
    const auto* same = dynamic_cast<const Chain*>(&other);
    return same && typeid(*this) == typeid(other) && same->layout_ == layout_ &&
        same->mode_ == mode_ && same->activation_ == activation_;
  }

 protected:
  std::vector<Unit> chain(const std::vector<mx::array>& inputs, int weights) const {
    const std::vector<mx::array> list(inputs.begin() + kInputs, inputs.begin() + weights);
    return units(layout_, list, mode_, inputs[1].shape(0));
  }

  // The chain of `inputs` (projected, h, dt, then `weights` of them in all), checked.
  std::vector<Unit> checked(const std::vector<mx::array>& inputs, int weights) const {
    const std::vector<mx::array> list(inputs.begin() + kInputs, inputs.begin() + weights);
    return checked_chain(inputs[0], inputs[1], inputs[2], list, layout_, mode_, activation_);
  }

  std::vector<int> layout_;
  int mode_, activation_;
};

class CfCStepBackward : public Chain {
 public:
  using Chain::Chain;

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs)
      override {
    const auto units = chain(inputs, int(outputs.size()));
    const int mode = mode_, activation = activation_;
    dispatch(stream(), inputs, outputs, [units, mode, activation](auto& in, auto& out) {
      backward(in, out, units, mode, activation);
    });
  }
  const char* name() const override {
    return "CfCStepBackward";
  }
  std::shared_ptr<mx::Primitive> clone() override {
    return std::make_shared<CfCStepBackward>(stream(), layout_, mode_, activation_);
  }
  // Inputs: the primals, the forward's new state and cache, the state's cotangent.
  void validate(const std::vector<mx::array>& in) override {
    const int primals = int(in.size()) - 3;
    const auto units = checked(in, primals);
    const int batch = in[1].shape(0), width = in[1].shape(1);
    check_matrix("cfc_step", in[primals], "new state", batch, width);
    check_matrix("cfc_step", in[primals + 2], "cotangent", batch, width);
    const mx::array& cache = in[primals + 1];
    if (cache.ndim() != 1 || cache.shape(0) != cache_size(units, batch) ||
        cache.dtype() != mx::float32)
      throw argument_error("cfc_step", "the cache does not fit the chain");
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    std::vector<mx::Shape> shapes;
    for (size_t i = 0; i + 3 < inputs.size(); ++i)
      shapes.push_back(inputs[i].shape());
    return shapes;
  }
};

class CfCStep : public Chain {
 public:
  using Chain::Chain;

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs)
      override {
    const auto units = chain(inputs, int(inputs.size()));
    const int mode = mode_, activation = activation_;
    dispatch(stream(), inputs, outputs, [units, mode, activation](auto& in, auto& out) {
      forward(in, out, units, mode, activation);
    });
  }
  std::vector<mx::array> vjp(
      const std::vector<mx::array>& primals,
      const std::vector<mx::array>& cotangents,
      const std::vector<int>& argnums,
      const std::vector<mx::array>& outputs) override {
    std::vector<mx::array> inputs(primals);
    inputs.insert(inputs.end(), outputs.begin(), outputs.end());
    inputs.push_back(cotangents[0]);
    std::vector<mx::Shape> shapes;
    for (const auto& a : primals)
      shapes.push_back(a.shape());
    auto grads = mx::array::make_arrays(
        std::move(shapes),
        std::vector<mx::Dtype>(primals.size(), mx::float32),
        std::make_shared<CfCStepBackward>(stream(), layout_, mode_, activation_),
        inputs);
    std::vector<mx::array> result;
    for (int arg : argnums)
      result.push_back(grads[arg]);
    return result;
  }
  const char* name() const override {
    return "CfCStep";
  }
  std::shared_ptr<mx::Primitive> clone() override {
    return std::make_shared<CfCStep>(stream(), layout_, mode_, activation_);
  }
  void validate(const std::vector<mx::array>& in) override {
    checked(in, int(in.size()));
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    const auto units = chain(inputs, int(inputs.size()));
    return {inputs[1].shape(), {int(cache_size(units, inputs[1].shape(0)))}};
  }
};

} // namespace

std::vector<std::string> cfc_mode_names() {
  return {"default", "pure", "no_gate"};
}

std::vector<std::string> cfc_activation_names() {
  return {"lecun_tanh", "tanh", "relu", "silu", "gelu"};
}

mx::array cfc_step(
    const mx::array& projected,
    const mx::array& h,
    const mx::array& dt,
    const std::vector<mx::array>& weights,
    const std::vector<int>& layout,
    int mode,
    int activation) {
  const auto chain = checked_chain(projected, h, dt, weights, layout, mode, activation);
  std::vector<mx::array> inputs{projected, h, dt};
  inputs.insert(inputs.end(), weights.begin(), weights.end());
  const mx::Stream stream = mx::default_stream(mx::Device::cpu);
  const auto primitive = std::make_shared<CfCStep>(stream, layout, mode, activation);
  auto outputs = mx::array::make_arrays(
      {h.shape(), {int(cache_size(chain, h.shape(0)))}},
      {mx::float32, mx::float32},
      primitive,
      inputs);
  return outputs[0];
}

void cfc_step_direct(
    const mx::array& projected,
    const mx::array& h,
    const mx::array& dt,
    const std::vector<mx::array>& weights,
    const std::vector<int>& layout,
    int mode,
    int activation,
    mx::array& out) {
  const auto chain = checked_chain(projected, h, dt, weights, layout, mode, activation);
  check_matrix("cfc_step", out, "out", h.shape(0), h.shape(1));
  std::vector<mx::array> inputs{projected, h, dt};
  inputs.insert(inputs.end(), weights.begin(), weights.end());
  std::vector<mx::array> outputs{out, allocated({int(cache_size(chain, h.shape(0)))})};
  forward(inputs, outputs, chain, mode, activation);
}

} // namespace ncps
