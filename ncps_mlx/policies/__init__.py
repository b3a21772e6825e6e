"""Neural circuit policies: trained by imitation, run in closed loops, deployed and
inspected neuron by neuron.

A policy is a model run one observation at a time with its state carried
([`ModelPolicy`][ncps_mlx.policies.ModelPolicy] over the [`Controller`][ncps_mlx.Controller],
or [`PackagePolicy`][ncps_mlx.policies.PackagePolicy] over an exported Core ML package) in a
Gymnasium environment ([`TASKS`][ncps_mlx.policies.TASKS]: ``Pendulum-v1`` and
``CartPole-v1``, which need no downloads). [`rollout`][ncps_mlx.policies.rollout] runs seeded
episodes, clean or under a [`Perturbation`][ncps_mlx.policies.Perturbation]: observation
noise, and irregular sampling with the elapsed time given to the policy as its timespan.
[`dagger`][ncps_mlx.policies.dagger] trains a model to imitate a task's expert
([`expert_for`][ncps_mlx.policies.expert_for]),
[`run_evaluation`][ncps_mlx.policies.run_evaluation] compares NCPs with baselines of the same
size, and [`record_activity`][ncps_mlx.policies.record_activity] with its figures shows what
each neuron did.

Needs the ``control`` extra (gymnasium) for environments, and ``plot`` for figures:

```bash
pip install 'ncps-mlx[control,plot]'
```
"""

from .circuit import (
    Activity,
    Attributions,
    command_attributions,
    plot_attributions,
    plot_circuit_activity,
    plot_traces,
    record_activity,
)
from .deploy import TOLERANCES, ConditionCheck, DeploymentCheck, check_deployment
from .evaluation import (
    DEFAULT,
    QUICK,
    Evaluation,
    Imitation,
    Row,
    TrainedPolicy,
    run_evaluation,
    train_policy,
)
from .experts import EXPERTS, CartPoleExpert, PendulumExpert, expert_for, lqr_gain
from .imitation import DaggerResult, behaviour_cloning, dagger, demonstrations, to_sequences
from .latency import LoopLatency, LoopTiming, ReferencePolicy, loop_latency, reference_model
from .loop import Episode, evaluate, rollout
from .models import LABELS, MODEL_KINDS, NCP_UNITS, policy_model
from .perturb import CLEAN, CONDITIONS, IRREGULAR, NOISY, WITHHELD, Perturbation
from .policy import ExpertPolicy, ModelPolicy, PackagePolicy, Policy, StepperPolicy
from .tasks import TASKS, Task, get_task

__all__ = [
    "CLEAN",
    "DEFAULT",
    "CONDITIONS",
    "EXPERTS",
    "IRREGULAR",
    "LABELS",
    "MODEL_KINDS",
    "NCP_UNITS",
    "NOISY",
    "QUICK",
    "TASKS",
    "TOLERANCES",
    "WITHHELD",
    "ConditionCheck",
    "DeploymentCheck",
    "LoopLatency",
    "LoopTiming",
    "ReferencePolicy",
    "check_deployment",
    "loop_latency",
    "reference_model",
    "Activity",
    "Attributions",
    "CartPoleExpert",
    "DaggerResult",
    "Episode",
    "Evaluation",
    "ExpertPolicy",
    "Imitation",
    "ModelPolicy",
    "PackagePolicy",
    "PendulumExpert",
    "Perturbation",
    "Policy",
    "Row",
    "StepperPolicy",
    "Task",
    "TrainedPolicy",
    "behaviour_cloning",
    "command_attributions",
    "dagger",
    "demonstrations",
    "evaluate",
    "expert_for",
    "get_task",
    "lqr_gain",
    "plot_attributions",
    "plot_circuit_activity",
    "plot_traces",
    "policy_model",
    "record_activity",
    "rollout",
    "run_evaluation",
    "to_sequences",
    "train_policy",
]
