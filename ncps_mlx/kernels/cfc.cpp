// CfC steps as one MLX primitive for the CPU: the cell with its backbone, or the chain
// of backbone-free CfC layers of a wiring (an NCP's inter, command and motor layers);
// one step, or every step of a sequence in one call.
//
// On the CPU a CfC step in MLX operations is 7-18 graph operations on small arrays
// (30-74 when differentiated), each costing more to launch than to compute, and its
// products run on MLX's slow CPU BLAS. Here a sequence is one call forward and one
// backward, with the products on the micro-kernel of dense.h. Samples are independent,
// so each piece of batch rows runs every step on its own (parallel.h); the backward
// pass then sums each weight's gradient over the steps and samples in pieces of its
// rows.
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
// With mixed memory, a sequence runs the LSTM of lstm.h before the chain at every step
// (gates = z_t + h @ W; the chain starts from the LSTM's h') and returns its memories.

#include <cmath>
#include <functional>
#include <numbers>
#include <string>
#include <typeinfo>

#include "common.h"
#include "dense.h"
#include "lstm.h"
#include "parallel.h"

namespace ncps {
namespace {

// The codes of the modes and activations; their names, in this order, are
// cfc_mode_names() and cfc_activation_names() (checked against the cells' at load time).
enum Mode { kDefault = 0, kPure = 1, kNoGate = 2 };
enum Activation { kLecunTanh = 0, kTanh = 1, kRelu = 2, kSilu = 3, kGelu = 4 };

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

// The weights of a call as Rows by their index among the primals (kInputs..count-1),
// read from in[index + offset] once before the pieces run (copied only when strided).
class Weights {
 public:
  Weights(const std::vector<mx::array>& in, int count, int offset = 0)
      : rows_(count), buffers_(count) {
    for (int i = kInputs; i < count; ++i)
      rows_[i] = rows(in[i + offset], buffers_[i]);
  }
  Rows operator[](int index) const {
    return rows_[index];
  }

 private:
  std::vector<Rows> rows_;
  std::vector<std::vector<float>> buffers_;
};

// A (B, T, C) input, or a (B, C) one as T = 1, with contiguous columns: the row of
// sample b at step t is at data + b * batch_stride + t * step_stride.
struct Steps {
  const float* data;
  int64_t batch_stride, step_stride;

  const float* at(int b, int t) const {
    return data + b * batch_stride + t * step_stride;
  }
  Rows step(int t) const {
    return {data + t * step_stride, batch_stride};
  }
};

// An input as Steps: in place when its columns are contiguous (or single), else copied
// to `buffer`.
Steps steps(const mx::array& a, std::vector<float>& buffer) {
  const bool sequence = a.ndim() == 3;
  const int64_t step_stride = sequence ? a.strides()[1] : 0;
  if (a.strides().back() == 1 || a.shape(-1) == 1)
    return {a.data<float>(), a.strides()[0], step_stride};
  const int batch = a.shape(0), count = sequence ? a.shape(1) : 1, cols = a.shape(-1);
  buffer.resize(size_t(batch) * count * cols);
  const int64_t col = a.strides().back();
  for (int b = 0; b < batch; ++b)
    for (int t = 0; t < count; ++t)
      for (int j = 0; j < cols; ++j)
        buffer[(size_t(b) * count + t) * cols + j] =
            a.data<float>()[b * a.strides()[0] + t * step_stride + j * col];
  return {buffer.data(), int64_t(count) * cols, cols};
}

// The mixed-memory LSTM that runs before the chain at every step of a sequence (see
// lstm.h): gates = z_t + h @ w, and the chain starts from the LSTM's h' instead of h.
struct Memory {
  Steps z; // the LSTM's projected input with its bias (B, T, 4N)
  Rows c0; // its memory before the first step (B, N)
  Rows w; // (N, 4N)
  float* cells; // (B, T, N): its memory after each step
  int64_t gates_at, hidden_at; // where a cache block keeps the gates (B, 4N) and h' (B, N)
};

// Where a call's time steps read and write. A single step is a sequence of one step:
// its (B, C) arrays are the (B, T, C) ones with T = 1.
struct Sequence {
  int batch, steps, width; // B, T, N
  Steps p, dt; // the projected input (B, T, width_0) and dt (B, T, 1)
  Rows h0; // the state before the first step (B, N)
  float* states; // (B, T, N): the state after each step
  float* cache; // each step's cache: T blocks of `block` values, or one reused (stride 0)
  int64_t block, block_stride;
  const Memory* memory = nullptr;

  int64_t state_ld() const {
    return int64_t(steps) * width;
  }
  // The state step t starts from.
  Rows before(int t) const {
    return t == 0 ? h0 : Rows{states + int64_t(t - 1) * width, state_ld()};
  }
  // The state the chain starts from at step t: the LSTM's h' with mixed memory.
  Rows input(int t) const {
    if (memory == nullptr)
      return before(t);
    return {cache + t * block_stride + memory->hidden_at, width};
  }
  Rows cells_before(int t) const {
    return t == 0 ? memory->c0 : Rows{memory->cells + int64_t(t - 1) * width, state_ld()};
  }
  float* after(int t) const {
    return states + int64_t(t) * width;
  }
  float timespan(int b, int t) const {
    return *dt.at(b, t);
  }
};

// The default and no_gate modes differ by f1's weight, 1 - g or 1: written as
// 1 - gated g with gated 1 or 0 (exactly the same values), so the loops over a row have
// no branch and vectorise.

// Writes h'_u of step t into the state's columns for the rows of `piece`, given the
// unit's heads for those rows (count, heads) dense.
void solve(const Unit& u, int mode, const float* heads, const Sequence& s, int t,
           const Weights& w, Piece piece) {
  const int n = u.n;
  const float* w_tau = mode == kPure ? w[u.tau][0] : nullptr;
  const float* amp = mode == kPure ? w[u.amp][0] : nullptr;
  for (int r = 0; r < piece.count; ++r) {
    const int b = piece.first + r;
    const float dt = s.timespan(b, t);
    const float* hb = heads + int64_t(r) * u.heads;
    float* o = s.after(t) + b * s.state_ld() + u.state;
    if (mode == kPure) {
      for (int j = 0; j < n; ++j) {
        const float decay = std::exp(-dt * (std::fabs(w_tau[j]) + std::fabs(hb[j])));
        o[j] = -amp[j] * decay * hb[j] + amp[j];
      }
      continue;
    }
    const float gated = mode == kNoGate ? 0.f : 1.f; // 1 or 0: see the note above solve()
    for (int j = 0; j < n; ++j) {
      const float f1 = rational_tanh(hb[j]), f2 = rational_tanh(hb[n + j]);
      const float g = sigmoid(hb[2 * n + j] * dt + hb[3 * n + j]);
      o[j] = f1 * (1.f - gated * g) + g * f2;
    }
  }
}

// Step t of one unit for the rows of `piece`: its pre-activations and heads into the
// step's cache, its new state into the state's columns. `z` holds the piece's
// activations of a layer (count x width).
void forward_unit(const Unit& u, const Sequence& s, int t, const Weights& w, int activation,
                  int mode, Piece piece, float* z) {
  const int first = piece.first, count = piece.count, batch = s.batch;
  float* cache = s.cache + t * s.block_stride;
  float* pre = cache + u.segment(0, batch) + int64_t(first) * u.width;
  if (u.in == 0) {
    const Rows p = s.p.step(t);
    for (int r = 0; r < count; ++r)
      std::copy(p[first + r], p[first + r] + u.width, pre + int64_t(r) * u.width);
  } else {
    fill_rows(pre, u.width, w[u.bx], count, u.width);
    const Rows previous{s.after(t) + first * s.state_ld() + (u.state - u.in), s.state_ld()};
    matmul(pre, u.width, previous, w[u.wx], count, u.in, u.width);
  }
  const Rows h = s.input(t);
  matmul(pre, u.width, Rows{h[first] + u.state, h.ld}, w[u.wh], count, u.n, u.width);
  for (int i = 1; i <= u.layers; ++i) {
    activate(activation, cache + u.segment(i - 1, batch) + int64_t(first) * u.width, z,
             count * u.width);
    const bool last = i == u.layers;
    const int cols = last ? u.heads : u.width;
    const int wi = last ? u.head_w : u.hidden_w[i - 1], bi = last ? u.head_b : u.hidden_b[i - 1];
    float* target = cache + u.segment(i, batch) + int64_t(first) * cols;
    fill_rows(target, cols, w[bi], count, cols);
    matmul(target, cols, Rows{z, u.width}, w[wi], count, u.width, cols);
  }
  const float* heads = cache + u.segment(u.layers, batch) + int64_t(first) * u.heads;
  solve(u, mode, heads, s, t, w, piece);
}

// Step t of the mixed-memory LSTM for the rows of `piece`: its gates and h' into the
// step's cache block, its memory into the cells.
void memory_forward(const Sequence& s, int t, Piece piece) {
  const Memory& m = *s.memory;
  const int n = s.width, first = piece.first, count = piece.count;
  float* block = s.cache + t * s.block_stride;
  float* gates = block + m.gates_at + int64_t(first) * 4 * n;
  for (int r = 0; r < count; ++r)
    std::copy(m.z.at(first + r, t), m.z.at(first + r, t) + 4 * n, gates + int64_t(r) * 4 * n);
  const Rows h = s.before(t), c = s.cells_before(t);
  matmul(gates, 4 * n, Rows{h[first], h.ld}, m.w, count, n, 4 * n);
  for (int r = 0; r < count; ++r) {
    const int b = first + r;
    update_row(n, gates + int64_t(r) * 4 * n, c[b], block + m.hidden_at + int64_t(b) * n,
               m.cells + b * s.state_ld() + int64_t(t) * n);
  }
}

// The forward pass: every step's state and cache. Samples are independent: each piece
// of rows runs the whole chain through every step, with no wait between steps.
void forward(const Sequence& s, const Weights& w, const std::vector<Unit>& chain, int mode,
             int activation) {
  int widest = 0;
  for (const Unit& u : chain)
    widest = std::max(widest, u.width);
  parallel_for(pieces_of(s.batch, kRowGrain), [&](int index) {
    const Piece piece = piece_of(index, s.batch, kRowGrain);
    std::vector<float> z(size_t(piece.count) * widest); // one piece's, for every step
    for (int t = 0; t < s.steps; ++t) {
      if (s.memory != nullptr)
        memory_forward(s, t, piece);
      for (const Unit& u : chain)
        forward_unit(u, s, t, w, activation, mode, piece, z.data());
    }
  });
}

// What the backward pass keeps per sample for the weights' gradients, in the forward
// cache's layout (a block per step): each layer's input (the activations z) and the
// cotangent of its output; in pure mode, each unit's per-sample terms of the w_tau and
// A gradients (T, B, n).
struct Kept {
  Buffer z, d;
  std::vector<Buffer> tau, amp;
};

// Where the backward pass writes the per-sample cotangents, all dense: the projected
// input's (B, T, width_0), the first state's (B, N) and dt's (B, T); with mixed memory
// the LSTM's projected input's (B, T, 4N) and its first memory's (B, N).
struct SampleGradients {
  float *projected, *h0, *dt;
  float *z = nullptr, *c0 = nullptr;
};

// One row of the default or no_gate solution's backward pass: d_heads `dh` (4n) and the
// dt terms (n) from the heads `hb` (4n) and the new state's cotangent `gb` (n). Its own
// function so that its pointers are __restrict__ (distinct), and the loop vectorises.
void gate_backward(int n, float t, float gated, const float* __restrict__ hb,
                   const float* __restrict__ gb, float* __restrict__ dh,
                   float* __restrict__ dt_terms) {
  for (int j = 0; j < n; ++j) {
    const float f1 = rational_tanh(hb[j]), f2 = rational_tanh(hb[n + j]);
    const float a = hb[2 * n + j];
    const float gate = sigmoid(a * t + hb[3 * n + j]);
    const float keep = 1.f - gated * gate; // gated 1 or 0: see the note above solve()
    const float d_gate = gb[j] * (f2 - gated * f1);
    const float d_z = d_gate * gate * (1.f - gate);
    dh[j] = gb[j] * keep * (1.f - f1 * f1);
    dh[n + j] = gb[j] * gate * (1.f - f2 * f2);
    dh[2 * n + j] = d_z * t;
    dh[3 * n + j] = d_z;
    dt_terms[j] = d_z * a;
  }
}

// d_heads (count, heads) of step t for the rows of `piece` from the new state's
// cotangent `g` (its rows, the unit's columns); adds to the cotangent of dt and writes
// the per-sample terms of w_tau and A (rows of (B, n)). `dt_terms` (n) holds each row's
// dt terms, summed after the loop over them (so that loop vectorises).
void solve_backward(const Unit& u, int mode, const float* heads, Rows g, const Sequence& s,
                    int t, const Weights& w, float* d_dt, float* d_heads, float* tau_terms,
                    float* amp_terms, float* dt_terms, Piece piece) {
  const int n = u.n;
  const float* w_tau = mode == kPure ? w[u.tau][0] : nullptr;
  const float* amp = mode == kPure ? w[u.amp][0] : nullptr;
  for (int r = 0; r < piece.count; ++r) {
    const int b = piece.first + r;
    const float dt = s.timespan(b, t);
    const float* hb = heads + int64_t(r) * u.heads;
    float* dh = d_heads + int64_t(r) * u.heads;
    const float* gb = g[r];
    if (mode == kPure) {
      float* d_tau = tau_terms + int64_t(b) * n;
      float* d_amp = amp_terms + int64_t(b) * n;
      for (int j = 0; j < n; ++j) {
        const float a = amp[j], x = hb[j], wt = w_tau[j];
        const float rate = std::fabs(wt) + std::fabs(x), decay = std::exp(-dt * rate);
        const float sign_x = float((x > 0.f) - (x < 0.f)), sign_w = float((wt > 0.f) - (wt < 0.f));
        // h' = -a decay x + a, decay = exp(-dt (|w| + |x|))
        dh[j] = -gb[j] * a * decay * (1.f - dt * x * sign_x);
        d_amp[j] = gb[j] * (1.f - decay * x);
        d_tau[j] = gb[j] * a * x * decay * dt * sign_w;
        dt_terms[j] = gb[j] * a * x * decay * rate;
      }
    } else {
      gate_backward(n, dt, mode == kNoGate ? 0.f : 1.f, hb, gb, dh, dt_terms);
    }
    float sum = 0.f;
    for (int j = 0; j < n; ++j)
      sum += dt_terms[j];
    d_dt[int64_t(b) * s.steps + t] += sum;
  }
}

// Step t of the per-sample backward pass for the rows of `piece`: from `g`, the
// cotangent of the step's new state (count, N), to `carry`, that of the state it
// started from; the projected input's and dt's cotangents, and what the weights'
// gradients need. `dt_terms` is scratch for solve_backward (N values).
void backward_step(const std::vector<Unit>& chain, const Sequence& s, int t, const Weights& wt,
                   const Weights& w, float* g, float* carry, float* dt_terms, Kept& kept,
                   const SampleGradients& out, int mode, int activation, Piece piece) {
  const int batch = s.batch, width = s.width, first = piece.first, count = piece.count;
  const float* cache = s.cache + t * s.block_stride;
  for (auto u = chain.rbegin(); u != chain.rend(); ++u) {
    const int k = int(chain.rend() - u) - 1;
    float* d = kept.d.get() + t * s.block + u->segment(u->layers, batch) +
        int64_t(first) * u->heads;
    const int64_t terms = int64_t(t) * batch * u->n;
    solve_backward(*u, mode, cache + u->segment(u->layers, batch) + int64_t(first) * u->heads,
                   Rows{g + u->state, width}, s, t, w, out.dt, d,
                   mode == kPure ? kept.tau[k].get() + terms : nullptr,
                   mode == kPure ? kept.amp[k].get() + terms : nullptr, dt_terms, piece);
    // Back through the heads and the backbone, to the first layer's pre-activations.
    for (int i = u->layers; i >= 1; --i) {
      const int cols = i == u->layers ? u->heads : u->width;
      const int wi = i == u->layers ? u->head_w : u->hidden_w[i - 1];
      const int64_t at = t * s.block + u->segment(i - 1, batch) + int64_t(first) * u->width;
      const float* before = s.cache + at; // the backward pass has every block
      activate(activation, before, kept.z.get() + at, count * u->width);
      float* d_before = kept.d.get() + at;
      matmul(d_before, u->width, Rows{d, cols}, wt[wi], count, cols, u->width, Write::kSet);
      activate_backward(activation, before, d_before, count * u->width);
      d = d_before;
    }
    matmul(carry + u->state, width, Rows{d, u->width}, wt[u->wh], count, u->width, u->n,
           Write::kSet);
    if (u->in == 0) {
      for (int r = 0; r < count; ++r)
        std::copy(d + int64_t(r) * u->width, d + int64_t(r + 1) * u->width,
                  out.projected + (int64_t(first + r) * s.steps + t) * u->width);
    } else {
      matmul(g + (u->state - u->in), width, Rows{d, u->width}, wt[u->wx], count, u->width,
             u->in);
    }
  }
}

// The cotangents the backward pass reads: the states' (B, T, N) and, with mixed memory,
// the cells' (B, T, N), with the LSTM weight's transpose (4N, N).
struct Cotangents {
  Steps states, cells;
  Rows memory_w_t;
};

// Step t of the mixed-memory LSTM's backward pass for the rows of `piece`: from `carry`,
// the cotangent of its h' (what the chain's first unit starts from), and `dc`, that of
// its memory after the step, to those of the state and memory before the step (into
// `carry` and `dc`); the gates' cotangents are the projected input's.
void memory_backward(const Sequence& s, int t, const Cotangents& cot, float* carry, float* dc,
                     float* dc_after, const SampleGradients& out, Piece piece) {
  const Memory& m = *s.memory;
  const int n = s.width, first = piece.first, count = piece.count;
  const float* block = s.cache + t * s.block;
  const Rows c = s.cells_before(t);
  for (int r = 0; r < count; ++r) {
    const int b = first + r;
    const float* given = cot.cells.at(b, t);
    for (int j = 0; j < n; ++j)
      dc_after[int64_t(r) * n + j] = given[j] + dc[int64_t(r) * n + j];
    update_row_backward(n, block + m.gates_at + int64_t(b) * 4 * n, c[b],
                        m.cells + b * s.state_ld() + int64_t(t) * n, carry + int64_t(r) * n,
                        dc_after + int64_t(r) * n, out.z + (int64_t(b) * s.steps + t) * 4 * n,
                        dc + int64_t(r) * n);
  }
  const Rows gates{out.z + (int64_t(first) * s.steps + t) * 4 * n, int64_t(s.steps) * 4 * n};
  matmul(carry, n, gates, cot.memory_w_t, count, 4 * n, n, Write::kSet);
}

// The per-sample backward pass for the rows of `piece`, from the last step to the first:
// each step's state cotangent is the states' cotangent there plus what flows back from
// the step after.
void backward_rows(const std::vector<Unit>& chain, const Sequence& s, const Cotangents& cot,
                   const Weights& wt, const Weights& w, Kept& kept, const SampleGradients& out,
                   int mode, int activation, Piece piece) {
  const int width = s.width, count = piece.count;
  const size_t size = size_t(count) * width;
  std::vector<float> g(size), carry(size, 0.f), dc(size, 0.f), dc_after(size), dt_terms(width);
  for (int t = s.steps - 1; t >= 0; --t) {
    for (int r = 0; r < count; ++r) {
      const float* c = cot.states.at(piece.first + r, t);
      for (int j = 0; j < width; ++j)
        g[size_t(r) * width + j] = c[j] + carry[size_t(r) * width + j];
    }
    backward_step(chain, s, t, wt, w, g.data(), carry.data(), dt_terms.data(), kept, out, mode,
                  activation, piece);
    if (s.memory != nullptr)
      memory_backward(s, t, cot, carry.data(), dc.data(), dc_after.data(), out, piece);
  }
  std::copy(carry.begin(), carry.end(), out.h0 + int64_t(piece.first) * width);
  if (s.memory != nullptr)
    std::copy(dc.begin(), dc.end(), out.c0 + int64_t(piece.first) * width);
}

// A (B, k) matrix per time step: `first` at step 0, then rows `ld` apart from
// base + t * step_stride.
struct PerStep {
  Rows first;
  const float* base;
  int64_t step_stride, ld;

  Rows at(int t) const {
    return t == 0 ? first : Rows{base + t * step_stride, ld};
  }
};

PerStep uniform(const float* base, int64_t step_stride, int64_t ld) {
  return {{base, ld}, base, step_stride, ld};
}

// The weights' gradients as pieces: sums over every step and sample of what the
// per-sample pass kept, each value summed in the same order (step, then sample)
// whatever the thread count.
std::vector<std::function<void()>> weight_gradients(const std::vector<Unit>& chain,
                                                    const Sequence& s, std::vector<mx::array>& out,
                                                    const Kept& kept, int mode,
                                                    const SampleGradients& samples) {
  const int batch = s.batch, steps = s.steps;
  std::vector<std::function<void()>> pieces;
  auto product = [&](int index, PerStep x, PerStep d, int k, int n) { // out[index] = sum x^T d
    float* target = out[index].data<float>();
    for (int first = 0; first < k; first += kWeightGrain)
      pieces.push_back([=] {
        const int count = std::min(kWeightGrain, k - first);
        for (int t = 0; t < steps; ++t)
          outer(target, x.at(t), d.at(t), batch, first, count, n,
                t == 0 ? Write::kSet : Write::kAdd);
      });
  };
  auto sums = [&](int index, PerStep d, int n) { // out[index] = column sums of d
    float* target = out[index].data<float>();
    pieces.push_back([=] {
      std::fill_n(target, n, 0.f);
      for (int t = 0; t < steps; ++t)
        column_sums_add(target, d.at(t), batch, n);
    });
  };
  const int64_t ld = s.state_ld();
  for (size_t k = 0; k < chain.size(); ++k) {
    const Unit& u = chain[k];
    auto kept_at = [&](const Buffer& values, int segment, int cols) {
      return uniform(values.get() + u.segment(segment, batch), s.block, cols);
    };
    for (int i = 1; i <= u.layers; ++i) {
      const int cols = i == u.layers ? u.heads : u.width;
      const PerStep d = kept_at(kept.d, i, cols);
      product(i == u.layers ? u.head_w : u.hidden_w[i - 1], kept_at(kept.z, i - 1, u.width), d,
              u.width, cols);
      sums(i == u.layers ? u.head_b : u.hidden_b[i - 1], d, cols);
    }
    const PerStep d = kept_at(kept.d, 0, u.width);
    // The state each step started from: the first state, then the states before; with
    // mixed memory, the LSTM's h' of the step.
    const PerStep before = s.memory != nullptr
        ? uniform(s.cache + s.memory->hidden_at + u.state, s.block, s.width)
        : PerStep{{s.h0.data + u.state, s.h0.ld}, s.states + u.state - s.width, s.width, ld};
    product(u.wh, before, d, u.n, u.width);
    if (u.in) {
      product(u.wx, uniform(s.states + (u.state - u.in), s.width, ld), d, u.in, u.width);
      sums(u.bx, d, u.width);
    }
    if (mode == kPure) {
      sums(u.tau, uniform(kept.tau[k].get(), int64_t(batch) * u.n, u.n), u.n);
      sums(u.amp, uniform(kept.amp[k].get(), int64_t(batch) * u.n, u.n), u.n);
    }
  }
  if (s.memory != nullptr) { // the LSTM's weight, the last primal: sum of h^T d_gates
    const int n = s.width;
    const PerStep before{s.h0, s.states - n, n, ld};
    product(int(out.size()) - 1, before, uniform(samples.z, 4 * n, int64_t(steps) * 4 * n), n,
            4 * n);
  }
  return pieces;
}

// The backward pass over the Sequence `s` (its states and cache those of the forward
// pass) given the cotangents. `out` are the primals' cotangents. First every per-sample
// cotangent, in pieces of rows; then each weight's gradient, in pieces of its rows.
// Every output is written once, whole (dt's is summed over the units).
void backward(const Sequence& s, const Cotangents& cot, const Weights& w, const Weights& wt,
              std::vector<mx::array>& out, const std::vector<Unit>& chain, int mode,
              int activation) {
  const int batch = s.batch, count = int(out.size());
  std::fill_n(out[2].data<float>(), out[2].size(), 0.f);
  Kept kept{Buffer(s.steps * s.block), Buffer(s.steps * s.block), {}, {}};
  if (mode == kPure)
    for (const Unit& u : chain) {
      kept.tau.emplace_back(size_t(s.steps) * batch * u.n);
      kept.amp.emplace_back(size_t(s.steps) * batch * u.n);
    }
  SampleGradients gradients{out[0].data<float>(), out[1].data<float>(), out[2].data<float>()};
  if (s.memory != nullptr) { // z, c0 and the LSTM weight are the last primals
    gradients.z = out[count - 3].data<float>();
    gradients.c0 = out[count - 2].data<float>();
  }
  parallel_for(pieces_of(batch, kRowGrain), [&](int index) {
    backward_rows(chain, s, cot, wt, w, kept, gradients, mode, activation,
                  piece_of(index, batch, kRowGrain));
  });
  const auto pieces = weight_gradients(chain, s, out, kept, mode, gradients);
  parallel_for(int(pieces.size()), [&](int index) { pieces[index](); });
}

// Throws unless `a` is a float32 (B, T, C) array.
void check_steps(const mx::array& a, const char* name, int batch, int steps, int cols) {
  if (a.ndim() != 3 || a.shape(0) != batch || a.shape(1) != steps || a.shape(2) != cols ||
      a.dtype() != mx::float32)
    throw argument_error(
        "cfc_step", std::string("'") + name + "' must be float32 of shape (" +
            std::to_string(batch) + ", " + std::to_string(steps) + ", " + std::to_string(cols) +
            ")");
}

// With mixed memory the LSTM's arrays follow the chain's weights: its projected input z,
// its first memory c0 and its weight w.
constexpr int kMemoryInputs = 3;

// A step's cache block: the chain's cache, then with mixed memory the LSTM's gates
// (B, 4N) and h' (B, N).
int64_t block_size(const std::vector<Unit>& chain, int batch, int width, bool memory) {
  const int64_t lstm = memory ? checked_size("cfc_step", "the LSTM's cache", {batch, 5, width})
                              : 0;
  return checked_size("cfc_step", "a step's cache", {cache_size(chain, batch) + lstm});
}

// The chain of a call, its arguments checked against it: one step (projected (B, W),
// dt (B, 1)) or a sequence (projected (B, T, W), dt (B, T, 1)); `memory` (z, c0, w),
// when not null, the mixed-memory LSTM of a sequence.
std::vector<Unit> checked_chain(
    const mx::array& projected,
    const mx::array& h,
    const mx::array& dt,
    const std::vector<mx::array>& weights,
    const std::vector<int>& layout,
    int mode,
    int activation,
    const mx::array* memory = nullptr) {
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
  if (projected.ndim() == 3) {
    const int steps = projected.shape(1);
    if (steps < 1)
      throw argument_error("cfc_step", "a sequence needs at least one step");
    check_steps(projected, "projected", batch, steps, chain.front().width);
    check_steps(dt, "dt", batch, steps, 1);
    checked_size("cfc_step", "the states (B x T x N)", {batch, steps, width});
    if (memory != nullptr) {
      const int gates = int(checked_size("cfc_step", "the LSTM's gates (4N)", {4, width}));
      checked_size("cfc_step", "the LSTM's input (B x T x 4N)", {batch, steps, gates});
      check_steps(memory[0], "z", batch, steps, gates);
      check_matrix("cfc_step", memory[1], "c", batch, width);
      check_matrix("cfc_step", memory[2], "wh_t", width, gates);
    }
    checked_size("cfc_step", "the cache (T x B x values per sample)",
                 {steps, block_size(chain, batch, width, memory != nullptr)});
  } else {
    if (memory != nullptr)
      throw argument_error("cfc_step", "mixed memory runs on a sequence: 'projected' (B, T, W)");
    check_matrix("cfc_step", projected, "projected", batch, chain.front().width);
    check_matrix("cfc_step", dt, "dt", batch, 1);
  }
  return chain;
}

int steps_of(const mx::array& projected) {
  return projected.ndim() == 3 ? projected.shape(1) : 1;
}

// The forward outputs' shapes: the states ((B, N) for a step, (B, T, N) for a
// sequence), with mixed memory the cells (B, T, N), and, when kept for the backward
// pass, the cache (T blocks).
std::vector<mx::Shape> forward_shapes(const std::vector<Unit>& chain, const mx::array& projected,
                                      const mx::array& h, bool keep_cache, bool memory) {
  const int steps = steps_of(projected), batch = h.shape(0), width = h.shape(1);
  mx::Shape states = projected.ndim() == 3 ? mx::Shape{batch, steps, width} : h.shape();
  std::vector<mx::Shape> shapes{states};
  if (memory)
    shapes.push_back(states);
  if (keep_cache)
    shapes.push_back({int(steps * block_size(chain, batch, width, memory))});
  return shapes;
}

// The arrays a call's Sequence reads in place or from copies.
struct Buffers {
  std::vector<float> p, dt, h0, z, c0, w, w_t, states, cells, cache, cotangents[2];
};

// A call's Sequence: its inputs `in` (projected, h, dt, ..., and with `memory` the
// LSTM's z, c0, w last) and its forward outputs' states and cache (every step's, or one
// block reused when `reused`).
Sequence sequence_of(const std::vector<mx::array>& in, int primals, float* states, float* cache,
                     bool reused, const std::vector<Unit>& chain, Memory* memory, Buffers& b) {
  const int batch = in[1].shape(0), width = in[1].shape(1);
  const int64_t block = block_size(chain, batch, width, memory != nullptr);
  Sequence s{batch,
             steps_of(in[0]),
             width,
             steps(in[0], b.p),
             steps(in[2], b.dt),
             rows(in[1], b.h0),
             states,
             cache,
             block,
             reused ? 0 : block};
  if (memory != nullptr) {
    const int64_t chain_cache = cache_size(chain, batch);
    memory->z = steps(in[primals - 3], b.z);
    memory->c0 = rows(in[primals - 2], b.c0);
    memory->w = rows(in[primals - 1], b.w);
    memory->gates_at = chain_cache;
    memory->hidden_at = chain_cache + int64_t(batch) * 4 * width;
    s.memory = memory;
  }
  return s;
}

// The forward pass into `out`: the states, the cells with mixed memory, and the cache
// when it is an output. Without it, one step's block serves every step: each piece of
// rows writes its own rows of it.
void run_forward(const std::vector<mx::array>& in, std::vector<mx::array>& out,
                 const std::vector<Unit>& chain, int mode, int activation, bool mixed) {
  const int primals = int(in.size());
  const bool kept = int(out.size()) == (mixed ? 3 : 2);
  Buffers buffers;
  Buffer scratch(kept ? 0 : block_size(chain, in[1].shape(0), in[1].shape(1), mixed));
  float* cache = kept ? out.back().data<float>() : scratch.get();
  Memory memory{};
  if (mixed)
    memory.cells = out[1].data<float>();
  const Sequence s = sequence_of(in, primals, out[0].data<float>(), cache, !kept, chain,
                                 mixed ? &memory : nullptr, buffers);
  forward(s, Weights(in, primals - (mixed ? kMemoryInputs : 0)), chain, mode, activation);
}

// Where a backward pass finds its inputs: the primals, the forward outputs (states,
// cells with mixed memory, cache), the cotangents of the states (and cells), then the
// transposes of the chain's weights (and of the LSTM weight).
struct BackwardInputs {
  int primals, weights_end, outputs, cotangents, transposes;

  BackwardInputs(int size, bool mixed)
      : primals((size - 3 + kInputs) / 2),
        weights_end(primals - (mixed ? kMemoryInputs : 0)),
        outputs(primals),
        cotangents(primals + (mixed ? 3 : 2)),
        transposes(cotangents + (mixed ? 2 : 1)) {}
};

void run_backward(const std::vector<mx::array>& in, std::vector<mx::array>& out,
                  const std::vector<Unit>& chain, int mode, int activation, bool mixed) {
  const BackwardInputs at(int(in.size()), mixed);
  Buffers buffers;
  // The forward outputs, read only (the Sequence's pointers are for the forward pass to
  // write): dense unless a transformation sliced them.
  auto read = [](const mx::array& a, std::vector<float>& buffer) {
    return const_cast<float*>(dense(a, buffer));
  };
  Memory memory{};
  if (mixed)
    memory.cells = read(in[at.outputs + 1], buffers.cells);
  const Sequence s = sequence_of(
      in, at.primals, read(in[at.outputs], buffers.states),
      read(in[at.cotangents - 1], buffers.cache), false, chain, mixed ? &memory : nullptr,
      buffers);
  const int chain_transposes = at.weights_end - kInputs;
  Cotangents cot{steps(in[at.cotangents], buffers.cotangents[0]), {}, {}};
  if (mixed) {
    cot.cells = steps(in[at.cotangents + 1], buffers.cotangents[1]);
    cot.memory_w_t = rows(in[at.transposes + chain_transposes], buffers.w_t);
  }
  const Weights w(in, at.weights_end), wt(in, at.weights_end, at.transposes - kInputs);
  backward(s, cot, w, wt, out, chain, mode, activation);
}

// What the forward and backward primitives share: the chain's layout, mode and
// activation, whether the forward pass keeps its cache, whether a mixed-memory LSTM
// runs before each step, and equivalence by them (for the compiler's common
// subexpressions).
class Chain : public CPUPrimitive {
 public:
  Chain(mx::Stream stream, std::vector<int> layout, int mode, int activation,
        bool keep_cache = true, bool mixed = false)
      : CPUPrimitive(stream), layout_(std::move(layout)), mode_(mode), activation_(activation),
        keep_cache_(keep_cache), mixed_(mixed) {}

  bool is_equivalent(const mx::Primitive& other) const override {
    const auto* same = dynamic_cast<const Chain*>(&other);
    return same && typeid(*this) == typeid(other) && same->layout_ == layout_ &&
        same->mode_ == mode_ && same->activation_ == activation_ &&
        same->keep_cache_ == keep_cache_ && same->mixed_ == mixed_;
  }

 protected:
  // The chain of `primals` (projected, h, dt, the chain's weights, and with mixed memory
  // the LSTM's arrays), the first `count` of `inputs`.
  std::vector<Unit> chain(const std::vector<mx::array>& inputs, int count) const {
    const int end = count - (mixed_ ? kMemoryInputs : 0);
    const std::vector<mx::array> list(inputs.begin() + kInputs, inputs.begin() + end);
    return units(layout_, list, mode_, inputs[1].shape(0));
  }

  // The same, checked.
  std::vector<Unit> checked(const std::vector<mx::array>& inputs, int count) const {
    const int end = count - (mixed_ ? kMemoryInputs : 0);
    if (end < kInputs)
      throw argument_error("cfc_step", "too few inputs");
    const std::vector<mx::array> list(inputs.begin() + kInputs, inputs.begin() + end);
    return checked_chain(inputs[0], inputs[1], inputs[2], list, layout_, mode_, activation_,
                         mixed_ ? inputs.data() + end : nullptr);
  }

  std::vector<int> layout_;
  int mode_, activation_;
  bool keep_cache_, mixed_;
};

class CfCChainBackward : public Chain {
 public:
  using Chain::Chain;

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs)
      override {
    const auto units = chain(inputs, int(outputs.size()));
    const int mode = mode_, activation = activation_;
    const bool mixed = mixed_;
    dispatch(stream(), inputs, outputs, [units, mode, activation, mixed](auto& in, auto& out) {
      run_backward(in, out, units, mode, activation, mixed);
    });
  }
  const char* name() const override {
    return "CfCChainBackward";
  }
  std::shared_ptr<mx::Primitive> clone() override {
    return std::make_shared<CfCChainBackward>(stream(), layout_, mode_, activation_, true,
                                              mixed_);
  }
  // Inputs: see BackwardInputs.
  void validate(const std::vector<mx::array>& in) override {
    const BackwardInputs at(int(in.size()), mixed_);
    if (at.primals < kInputs || int(in.size()) != 2 * at.primals + 3 - kInputs)
      throw argument_error("cfc_step", "the backward pass takes the primals, the forward "
                                       "outputs, their cotangents and the weights' transposes");
    const auto units = checked(in, at.primals);
    const int chain_transposes = at.weights_end - kInputs;
    check_transposes("cfc_step", in.data() + kInputs, in.data() + at.transposes,
                     chain_transposes);
    if (mixed_)
      check_transposes("cfc_step", in.data() + at.primals - 1,
                       in.data() + at.transposes + chain_transposes, 1);
    const auto shapes = forward_shapes(units, in[0], in[1], true, mixed_);
    for (size_t k = 0; k < shapes.size(); ++k)
      if (in[at.outputs + k].shape() != shapes[k] || in[at.outputs + k].dtype() != mx::float32)
        throw argument_error("cfc_step", "the forward outputs do not fit the chain");
    for (int k = 0; k < at.transposes - at.cotangents; ++k)
      if (in[at.cotangents + k].shape() != shapes[k] ||
          in[at.cotangents + k].dtype() != mx::float32)
        throw argument_error("cfc_step", "the cotangents do not fit the chain");
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    std::vector<mx::Shape> shapes;
    for (int i = 0; i < BackwardInputs(int(inputs.size()), mixed_).primals; ++i)
      shapes.push_back(inputs[i].shape());
    return shapes;
  }
};

// One step, or a whole sequence of steps, of a chain (with mixed memory, of the LSTM
// and the chain): outputs the states, the cells with mixed memory and, when it keeps
// it, the cache of the backward pass. Without it (inference), a vjp runs the forward
// pass again with its cache first.
class CfCChain : public Chain {
 public:
  using Chain::Chain;

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs)
      override {
    const auto units = chain(inputs, int(inputs.size()));
    const int mode = mode_, activation = activation_;
    const bool mixed = mixed_;
    dispatch(stream(), inputs, outputs, [units, mode, activation, mixed](auto& in, auto& out) {
      run_forward(in, out, units, mode, activation, mixed);
    });
  }
  std::vector<mx::array> vjp(
      const std::vector<mx::array>& primals,
      const std::vector<mx::array>& cotangents,
      const std::vector<int>& argnums,
      const std::vector<mx::array>& outputs) override {
    std::vector<mx::array> inputs(primals);
    const int count = int(primals.size()), forward_outputs = mixed_ ? 2 : 1;
    if (keep_cache_) {
      inputs.insert(inputs.end(), outputs.begin(), outputs.end());
    } else {
      const auto units = chain(primals, count);
      const auto recomputed = mx::array::make_arrays(
          forward_shapes(units, primals[0], primals[1], true, mixed_),
          std::vector<mx::Dtype>(forward_outputs + 1, mx::float32),
          std::make_shared<CfCChain>(stream(), layout_, mode_, activation_, true, mixed_),
          primals);
      inputs.insert(inputs.end(), recomputed.begin(), recomputed.end());
    }
    inputs.insert(inputs.end(), cotangents.begin(), cotangents.begin() + forward_outputs);
    const int end = count - (mixed_ ? kMemoryInputs : 0);
    for (int i = kInputs; i < end; ++i)
      inputs.push_back(transposed_copy(primals[i], stream()));
    if (mixed_)
      inputs.push_back(transposed_copy(primals[count - 1], stream()));
    auto backward =
        std::make_shared<CfCChainBackward>(stream(), layout_, mode_, activation_, true, mixed_);
    return cotangents_of(primals, argnums, std::move(backward), std::move(inputs));
  }
  const char* name() const override {
    return "CfCChain";
  }
  std::shared_ptr<mx::Primitive> clone() override {
    return std::make_shared<CfCChain>(stream(), layout_, mode_, activation_, keep_cache_, mixed_);
  }
  void validate(const std::vector<mx::array>& in) override {
    checked(in, int(in.size()));
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    const auto units = chain(inputs, int(inputs.size()));
    return forward_shapes(units, inputs[0], inputs[1], keep_cache_, mixed_);
  }
};

// The primitive's outputs for a call (the states first).
std::vector<mx::array> chain_outputs(
    const mx::array& projected,
    const mx::array& h,
    const mx::array& dt,
    const std::vector<mx::array>& weights,
    const std::vector<int>& layout,
    int mode,
    int activation,
    bool keep_cache,
    const std::vector<mx::array>& memory) {
  const bool mixed = !memory.empty();
  if (mixed && memory.size() != kMemoryInputs)
    throw argument_error("cfc_step", "mixed memory takes z, c and wh_t");
  const auto chain =
      checked_chain(projected, h, dt, weights, layout, mode, activation, mixed ? memory.data() : nullptr);
  std::vector<mx::array> inputs{projected, h, dt};
  inputs.insert(inputs.end(), weights.begin(), weights.end());
  inputs.insert(inputs.end(), memory.begin(), memory.end());
  auto shapes = forward_shapes(chain, projected, h, keep_cache, mixed);
  const size_t count = shapes.size();
  return mx::array::make_arrays(
      std::move(shapes), std::vector<mx::Dtype>(count, mx::float32),
      std::make_shared<CfCChain>(mx::default_stream(mx::Device::cpu), layout, mode, activation,
                                 keep_cache, mixed),
      inputs);
}

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
    int activation,
    bool keep_cache) {
  return chain_outputs(projected, h, dt, weights, layout, mode, activation, keep_cache, {})[0];
}

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
    const mx::array& wh_t) {
  auto outputs =
      chain_outputs(projected, h, dt, weights, layout, mode, activation, keep_cache, {z, c, wh_t});
  return {outputs[0], outputs[1]};
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
  if (projected.ndim() != 2)
    throw argument_error("cfc_step", "the direct form runs one step: 'projected' (B, W)");
  const auto chain = checked_chain(projected, h, dt, weights, layout, mode, activation);
  check_matrix("cfc_step", out, "out", h.shape(0), h.shape(1));
  std::vector<mx::array> inputs{projected, h, dt};
  inputs.insert(inputs.end(), weights.begin(), weights.end());
  std::vector<mx::array> outputs{out, allocated({int(cache_size(chain, h.shape(0)))})};
  run_forward(inputs, outputs, chain, mode, activation, false);
}

} // namespace ncps
