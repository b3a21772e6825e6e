"""Training: the compiled steps (the fast path) and the ``fit`` loop built on them."""

from .steps import make_predict as make_predict
from .steps import make_train_step as make_train_step
