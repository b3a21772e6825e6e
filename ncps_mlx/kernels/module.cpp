// The Python module of the fused kernels (ncps_mlx.kernels checks the arguments).

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "common.h"
#include "parallel.h"

namespace nb = nanobind;
namespace mx = mlx::core;

namespace {

// The direct forms take a step's arrays as NumPy arrays, copied in (a batch of states:
// a few hundred bytes), and the weights as evaluated mx.arrays, read in place. Results
// are computed into MLX memory and copied into the NumPy outputs, which are never
// converted (a result cannot land in a temporary copy).
template <class T>
using In = nb::ndarray<const T, nb::c_contig, nb::device::cpu>;
using Out = nb::ndarray<float, nb::c_contig, nb::device::cpu>;

template <class T>
mx::Shape shape_of(const T& a) {
  mx::Shape shape;
  for (size_t i = 0; i < a.ndim(); ++i)
    shape.push_back(int(a.shape(i)));
  return shape;
}

mx::array copied(const In<float>& a) {
  return mx::array(const_cast<float*>(a.data()), shape_of(a), mx::float32, [](void*) {});
}

mx::array output(const Out& a) {
  return ncps::allocated(shape_of(a));
}

void copy_out(const mx::array& result, Out& out) {
  std::copy_n(result.data<float>(), result.size(), out.data());
}

void require_evaluated(const std::vector<mx::array>& weights) {
  for (const auto& a : weights)
    if (!a.is_available())
      throw std::invalid_argument("[ncps_mlx] the direct forms need evaluated weights");
}

void cfc_direct(In<float> projected, In<float> h, In<float> dt,
                const std::vector<mx::array>& weights, std::vector<int> layout, int mode,
                int activation, Out out) {
  require_evaluated(weights);
  mx::array result = output(out);
  ncps::cfc_step_direct(copied(projected), copied(h), copied(dt), weights, layout, mode,
                        activation, result);
  copy_out(result, out);
}

void ltc_direct(std::vector<In<float>> per_neuron, const std::vector<mx::array>& synapses,
                int unfolds, Out out) {
  require_evaluated(synapses);
  std::vector<mx::array> inputs;
  for (const auto& a : per_neuron)
    inputs.push_back(copied(a));
  inputs.insert(inputs.end(), synapses.begin(), synapses.end());
  mx::array result = output(out);
  ncps::ltc_step_direct(inputs, unfolds, result);
  copy_out(result, out);
}

void synapse_sums_direct(In<float> x, const std::vector<mx::array>& synapses, Out numerator,
                         Out denominator) {
  require_evaluated(synapses);
  mx::array num = output(numerator), den = output(denominator);
  ncps::synapse_sums_direct(copied(x), synapses, num, den);
  copy_out(num, numerator);
  copy_out(den, denominator);
}

void lstm_direct(In<float> z, In<float> h, In<float> c, const mx::array& wh_t, Out h_out,
                 Out c_out) {
  require_evaluated({wh_t});
  mx::array h_next = output(h_out), c_next = output(c_out);
  ncps::lstm_step_direct(copied(z), copied(h), copied(c), wh_t, h_next, c_next);
  copy_out(h_next, h_out);
  copy_out(c_next, c_out);
}

} // namespace

NB_MODULE(_ncps_kernels, m) {
  m.doc() = "Fused recurrent steps of ncps_mlx as MLX primitives (CPU).";
  m.def(
      "ltc_step",
      &ncps::ltc_step,
      nb::arg("v"),
      nb::arg("cm"),
      nb::arg("numerator"),
      nb::arg("denominator"),
      nb::arg("pre"),
      nb::arg("post"),
      nb::arg("sigma"),
      nb::arg("mu"),
      nb::arg("w"),
      nb::arg("w_erev"),
      nb::arg("unfolds"),
      "All ODE unfolds of one semi-implicit LTC step: float32 (B, N) and (S,) inputs "
      "(checked by ncps_mlx.kernels.ltc_step), the synapse indices int32.");
  m.def(
      "cfc_step",
      &ncps::cfc_step,
      nb::arg("projected"),
      nb::arg("h"),
      nb::arg("dt"),
      nb::arg("weights"),
      nb::arg("layout"),
      nb::arg("mode"),
      nb::arg("activation"),
      nb::arg("keep_cache") = true,
      "One step, or a sequence of steps, of a chain of CfC units (a CfC cell, or a "
      "wiring's CfC layers): see ncps_mlx.kernels.cfc_step and cfc_sequence.");
  m.def("lstm_step", &ncps::lstm_step, nb::arg("z"), nb::arg("h"), nb::arg("c"), nb::arg("wh_t"),
        "The mixed-memory LSTM step (see ncps_mlx.kernels.lstm_step): [h', c'].");
  m.def("addmm", &ncps::addmm, nb::arg("a"), nb::arg("b"), nb::arg("c") = nb::none(),
        "c + a @ b for float32 matrices a (M, K), b (K, N) and c (N,) or None.");
  m.def("thread_count", &ncps::thread_count, "The threads the kernels use.");
  m.def("set_thread_count", &ncps::set_thread_count, nb::arg("count"),
        "Use 'count' threads (1 to 256) from now on.");
  m.def("cfc_memory_sequence", &ncps::cfc_memory_sequence, nb::arg("projected"), nb::arg("h"),
        nb::arg("dt"), nb::arg("weights"), nb::arg("layout"), nb::arg("mode"),
        nb::arg("activation"), nb::arg("keep_cache"), nb::arg("z"), nb::arg("c"),
        nb::arg("wh_t"),
        "A sequence of CfC steps with the mixed-memory LSTM before each: [states, cells].");
  m.def("cfc_mode_names", &ncps::cfc_mode_names, "cfc_step's modes, by code.");
  m.def("cfc_activation_names", &ncps::cfc_activation_names,
        "cfc_step's backbone activations, by code.");
  m.def("cfc_step_direct", &cfc_direct, nb::arg("projected"), nb::arg("h"), nb::arg("dt"),
        nb::arg("weights"), nb::arg("layout"), nb::arg("mode"), nb::arg("activation"),
        nb::arg("out").noconvert(),
        "cfc_step run now on NumPy arrays (the weights mx.arrays), into 'out'.");
  m.def("ltc_step_direct", &ltc_direct, nb::arg("per_neuron"), nb::arg("synapses"),
        nb::arg("unfolds"), nb::arg("out").noconvert(),
        "ltc_step run now: v, cm, numerator, denominator as NumPy arrays; pre, post, sigma, "
        "mu, w, w_erev as mx.arrays; into 'out'.");
  m.def("synapse_sums_direct", &synapse_sums_direct, nb::arg("x"), nb::arg("synapses"),
        nb::arg("numerator").noconvert(), nb::arg("denominator").noconvert(),
        "The synapse sums (pre, post, sigma, mu, w, w_erev as mx.arrays) of inputs 'x'.");
  m.def("lstm_step_direct", &lstm_direct, nb::arg("z"), nb::arg("h"), nb::arg("c"),
        nb::arg("wh_t"), nb::arg("h_out").noconvert(), nb::arg("c_out").noconvert(),
        "The mixed-memory LSTM step (wh_t an mx.array), into 'h_out' and 'c_out'.");
}
