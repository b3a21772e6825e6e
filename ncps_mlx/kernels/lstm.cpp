// The mixed-memory LSTM step, run directly for a controller (see common.h). Training
// and sequences run it as MLX operations (ncps_mlx.cells.LSTMCell); this is its forward
// pass only, with the rational tanh and sigmoid both paths share.

#include "common.h"
#include "dense.h"

namespace ncps {

void lstm_step_direct(
    const mx::array& z,
    const mx::array& h,
    const mx::array& c,
    const mx::array& wh_t,
    mx::array& h_out,
    mx::array& c_out) {
  const int batch = h.ndim() == 2 ? h.shape(0) : 0, n = h.ndim() == 2 ? h.shape(1) : 0;
  if (batch < 1)
    throw argument_error("lstm_step", "'h' must be (B, N) with B >= 1");
  checked_size("lstm_step", "the gates (B x 4N)", {batch, 4, n});
  checked_size("lstm_step", "'wh_t' (N x 4N)", {n, 4, n});
  check_matrix("lstm_step", z, "z", batch, 4 * n);
  check_matrix("lstm_step", c, "c", batch, n);
  check_matrix("lstm_step", wh_t, "wh_t", n, 4 * n);
  check_matrix("lstm_step", h_out, "h_out", batch, n);
  check_matrix("lstm_step", c_out, "c_out", batch, n);
  std::vector<float> buffer;
  const Rows zr = rows(z, buffer);
  std::vector<float> gates(size_t(batch) * 4 * n);
  for (int b = 0; b < batch; ++b)
    std::copy(zr[b], zr[b] + 4 * n, gates.data() + int64_t(b) * 4 * n);
  std::vector<float> hbuf, wbuf, cbuf;
  matmul_add(gates.data(), 4 * n, rows(h, hbuf), rows(wh_t, wbuf), batch, n, 4 * n);
  const Rows cr = rows(c, cbuf);
  float* h_next = h_out.data<float>();
  float* c_next = c_out.data<float>();
  for (int b = 0; b < batch; ++b) {
    const float* g = gates.data() + int64_t(b) * 4 * n;
    for (int j = 0; j < n; ++j) {
      const float input = g[j], input_gate = g[n + j], forget = g[2 * n + j];
      const float cell = cr[b][j] * sigmoid(forget + 1.f) +
          rational_tanh(input) * sigmoid(input_gate);
      c_next[b * n + j] = cell;
      h_next[b * n + j] = rational_tanh(cell) * sigmoid(g[3 * n + j]);
    }
  }
}

} // namespace ncps
