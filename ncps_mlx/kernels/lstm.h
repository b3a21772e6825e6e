// The mixed-memory LSTM's update of one sample, forward and backward: what the LSTM
// step (lstm.cpp) and a CfC sequence with mixed memory (cfc.cpp) share.
//   c' = c sigmoid(fg + 1) + tanh(i) sigmoid(ig),   h' = tanh(c') sigmoid(og)
// for the gates (i, ig, fg, og), 4n values.

#pragma once

#include "common.h"

namespace ncps {

// The rows below are functions of their own so that their pointers are __restrict__
// (distinct) and their loops vectorise.

// One sample's c' and h' from its gates (4n) and c (n).
inline void update_row(int n, const float* __restrict__ g, const float* __restrict__ c,
                float* __restrict__ h_next, float* __restrict__ c_next) {
  for (int j = 0; j < n; ++j) {
    const float cell = c[j] * sigmoid(g[2 * n + j] + 1.f) + rational_tanh(g[j]) * sigmoid(g[n + j]);
    c_next[j] = cell;
    h_next[j] = rational_tanh(cell) * sigmoid(g[3 * n + j]);
  }
}

// One sample's cotangents of the gates (4n) and of c (n), from its gates, c, c' and the
// cotangents of h' and c'.
inline void update_row_backward(int n, const float* __restrict__ g, const float* __restrict__ c,
                         const float* __restrict__ c_next, const float* __restrict__ dh_next,
                         const float* __restrict__ dc_next, float* __restrict__ dg,
                         float* __restrict__ d_c) {
  for (int j = 0; j < n; ++j) {
    const float in_gate = sigmoid(g[n + j]), forget = sigmoid(g[2 * n + j] + 1.f);
    const float out_gate = sigmoid(g[3 * n + j]), input = rational_tanh(g[j]);
    const float memory = rational_tanh(c_next[j]);
    const float dh = dh_next[j];
    const float dc = dc_next[j] + dh * out_gate * (1.f - memory * memory);
    dg[j] = dc * in_gate * (1.f - input * input);
    dg[n + j] = dc * input * in_gate * (1.f - in_gate);
    dg[2 * n + j] = dc * c[j] * forget * (1.f - forget);
    dg[3 * n + j] = dh * memory * out_gate * (1.f - out_gate);
    d_c[j] = dc * forget;
  }
}

} // namespace ncps
