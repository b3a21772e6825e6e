"""Training: the compiled steps (the fast path) and the ``fit`` loop built on them."""

from .callbacks import Callback as Callback
from .callbacks import CSVLogger as CSVLogger
from .callbacks import EarlyStopping as EarlyStopping
from .callbacks import ProgressBar as ProgressBar
from .callbacks import TensorBoardLogger as TensorBoardLogger
from .fit import fit as fit
from .memory import MemoryEstimate as MemoryEstimate
from .memory import check_memory as check_memory
from .memory import default_memory_budget as default_memory_budget
from .memory import estimate_memory as estimate_memory
from .memory import find_batch_size as find_batch_size
from .steps import make_predict as make_predict
from .steps import make_train_step as make_train_step
from .trainer import History as History
