"""Neural Circuit Policies (LTC and CfC networks with NCP wirings) on Apple's MLX."""

__version__ = "0.1.0"

from . import baselines as baselines  # registers the baseline cells, for ncps_mlx.load
from . import wirings as wirings
from .cells import Cell as Cell
from .cells import CfCCell as CfCCell
from .cells import Footprint as Footprint
from .cells import LSTMCell as LSTMCell
from .cells import LTCCell as LTCCell
from .cells import WiredCfCCell as WiredCfCCell
from .cells import register_cell as register_cell
from .controller import Controller as Controller
from .errors import CheckpointError as CheckpointError
from .errors import ConfigError as ConfigError
from .errors import MemoryBudgetError as MemoryBudgetError
from .errors import NCPSError as NCPSError
from .errors import NumericsError as NumericsError
from .errors import StateDictError as StateDictError
from .errors import TrainingDivergedError as TrainingDivergedError
from .errors import TrainingInterrupted as TrainingInterrupted
from .errors import UnverifiedCheckpointWarning as UnverifiedCheckpointWarning
from .errors import WiringError as WiringError
from .errors import WriteError as WriteError
from .io import LoadLimits as LoadLimits
from .io import load as load
from .io import load_weights as load_weights
from .io import save as save
from .numerics import UnstableSolverWarning as UnstableSolverWarning
from .rnn import LTC as LTC
from .rnn import RNN as RNN
from .rnn import CfC as CfC
from .rnn import model_from_config as model_from_config
