// The Python module of the fused kernels (ncps_mlx.kernels checks the arguments).

#include <nanobind/nanobind.h>
#include <nanobind/stl/vector.h>

#include "common.h"

namespace nb = nanobind;

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
      "One step of a chain of CfC units (a CfC cell, or a wiring's CfC layers): see "
      "ncps_mlx.kernels.cfc_step.");
}
