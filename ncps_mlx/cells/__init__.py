"""Recurrent cells: each computes one time step."""

from .activations import ACTIVATIONS as ACTIVATIONS
from .base import Cell as Cell
from .base import Footprint as Footprint
from .base import register_cell as register_cell
from .cfc import CfCCell as CfCCell
from .lstm import LSTMCell as LSTMCell
from .ltc import LTCCell as LTCCell
from .solvers import SOLVERS as SOLVERS
from .wired_cfc import WiredCfCCell as WiredCfCCell
