"""Fused CPU kernels: whole recurrent steps as single MLX primitives, behind adapters.

On MLX's CPU backend each graph operation costs about 2.5 us whatever its size, and an
LTC or CfC step is dozens of small ones (see the
[hardware guide](https://ncps-mlx.github.io/ncps_mlx/hardware/)).
[`ltc_step`][ncps_mlx.kernels.ltc_step] runs all ODE unfolds of a semi-implicit LTC step in one C++
primitive; [`cfc_step`][ncps_mlx.kernels.cfc_step] a CfC cell's step or all layers of a wired CfC's,
and [`cfc_sequence`][ncps_mlx.kernels.cfc_sequence] every step of a sequence in one call;
[`lstm_step`][ncps_mlx.kernels.lstm_step] the mixed-memory LSTM's step;
[`addmm`][ncps_mlx.kernels.addmm] the products hoisted out of the time loop. Each has a hand-written
backward pass, and all run on every core ([`ncps_mlx.kernels.cores`][ncps_mlx.kernels.cores]), with
the same bits for any thread count. They are compiled on first use, once per machine
([`ncps_mlx.kernels.build`][ncps_mlx.kernels.build]), proven against the MLX operations once per
build ([`ncps_mlx.kernels.selfcheck`][ncps_mlx.kernels.selfcheck]), and check everything they are
given before touching memory.

The cells know nothing of them. Adapters registered per cell type
([`ncps_mlx.kernels.registry`][ncps_mlx.kernels.registry]) offer a fused stepper where one applies:
the CPU and float32 (and for the LTC the semi-implicit solver). The sequence scan and the
[`Controller`][ncps_mlx.Controller] ask for one and otherwise run the cell's own step, so
results do not depend on them (the tests check the two against each other and against
the reference).

Set ``NCPS_MLX_KERNELS=0`` to never use or build them.
"""

from . import cfc as _cfc  # noqa: F401  (registers the CfC adapters)
from . import linear as _linear  # noqa: F401  (registers the output projection's adapter)
from . import lstm as _lstm  # noqa: F401  (registers the LSTM adapter)
from . import ltc as _ltc  # noqa: F401  (registers the LTC adapter)
from .build import BuildError as BuildError
from .cores import set_threads as set_threads
from .cores import threads as threads
from .library import disabled as disabled
from .library import unavailable_reason as unavailable_reason
from .library import usable as usable
from .primitives import addmm as addmm
from .primitives import cfc_sequence as cfc_sequence
from .primitives import cfc_step as cfc_step
from .primitives import lstm_step as lstm_step
from .primitives import ltc_step as ltc_step
from .registry import DirectLayer as DirectLayer
from .registry import direct_layer as direct_layer
from .registry import direct_stepper as direct_stepper
from .registry import graph_stepper as graph_stepper
from .registry import register as register
