"""The models the evaluation compares: two neural circuit policies and baselines of the
same size."""

import mlx.core as mx

from .._checks import check_choice, check_int
from ..costs import parameter_count
from ..rnn import LTC, RNN, CfC
from ..wirings import AutoNCP
from .tasks import Task, get_task

NCP_UNITS = 19
"""Neurons of the policies' NCP wiring, as in the lane-keeping policy of Lechner et al.
(2020): sensory inputs aside, 19 neurons in inter, command and motor layers."""
MLP_WINDOW = 4
"""Observations the MLP baseline sees at once: the newest and the three before it."""
MODEL_KINDS = ("cfc-ncp", "ltc-ncp", "gru", "lstm", "mlp")
"""The kinds of policy model [`policy_model`][ncps_mlx.policies.policy_model] builds."""
LABELS = {"cfc-ncp": "CfC-NCP", "ltc-ncp": "LTC-NCP", "gru": "GRU", "lstm": "LSTM", "mlp": "MLP"}
"""How tables name each kind."""


def ncp_policy(kind: str, task: "str | Task", units: int = NCP_UNITS) -> RNN:
    """A CfC or LTC over an [`AutoNCP`][ncps_mlx.wirings.AutoNCP] wiring of ``units`` neurons
    whose motor neurons are the task's outputs."""
    task = get_task(task)
    wiring = AutoNCP(units, task.output_size)
    layer = CfC if kind == "cfc-ncp" else LTC
    return layer(task.observation_size, wiring)


def policy_model(kind: str, task: "str | Task", *, seed: int = 0, units: int = NCP_UNITS) -> RNN:
    """A fresh policy model of ``kind`` for ``task``, its weights drawn from ``seed``.

    The NCPs are a CfC and an LTC over an AutoNCP wiring of ``units`` neurons. The
    baselines of [`ncps_mlx.baselines`][ncps_mlx.baselines] (a GRU, an LSTM, and an MLP over the
    last `MLP_WINDOW` observations) take the timespan as
    one more input and get the hidden size whose parameter count is closest to the CfC-NCP's.

    Raises:
        ValueError: ``kind`` is not one of [`MODEL_KINDS`][ncps_mlx.policies.MODEL_KINDS].
    """
    from .. import baselines

    check_choice("policy_model", "kind", kind, MODEL_KINDS)
    task = get_task(task)
    check_int("policy_model", "seed", seed, low=0)
    if kind in ("cfc-ncp", "ltc-ncp"):
        mx.random.seed(seed)
        return ncp_policy(kind, task, units)
    options = {"window": MLP_WINDOW} if kind == "mlp" else {}
    inputs = task.observation_size + 1
    target = parameter_count(ncp_policy("cfc-ncp", task, units))
    hidden = baselines.matched_hidden_size(
        kind, inputs, target, output_size=task.output_size, **options
    )
    mx.random.seed(seed)  # after the search, so that the weights depend on the seed alone
    return baselines.build_baseline(kind, inputs, hidden, output_size=task.output_size, **options)
