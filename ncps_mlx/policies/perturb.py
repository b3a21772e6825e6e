"""What a policy's observations suffer on the way to it: noise, and irregular sampling."""

from dataclasses import dataclass

import numpy as np

from .._checks import check_int, check_number


@dataclass(frozen=True)
class Perturbation:
    """How observations reach a policy during a rollout.

    Noise is Gaussian, with a standard deviation of `noise` times each feature's
    [`observation_scale`][ncps_mlx.policies.Task]. Irregular sampling drops each observation
    after the first with probability `drop`, never more than `max_gap - 1` in a row: while
    observations are missing the environment keeps receiving the last action (a zero-order
    hold), and the next observation arrives with the time elapsed since the previous one as
    the policy's timespan, in environment steps. With ``timespans=False`` the policy is
    not told: every observation arrives with a timespan of 1, as if sampling were regular,
    which measures how much a policy gains from knowing the elapsed time.

    Args:
        noise (float): Standard deviation of the noise, in units of each feature's scale.
            Default: 0 (none).
        drop (float): Probability, in [0, 1), that an observation is dropped. Default: 0.
        max_gap (int): The longest time between two observations, in steps. Default: 4.
        timespans (bool): Whether the policy is given the elapsed time. Default: ``True``.
    """

    noise: float = 0.0
    drop: float = 0.0
    max_gap: int = 4
    timespans: bool = True

    def __post_init__(self):
        check_number("Perturbation", "noise", self.noise, low=0.0)
        check_number("Perturbation", "drop", self.drop, low=0.0, below=1.0)
        check_int("Perturbation", "max_gap", self.max_gap)
        if not isinstance(self.timespans, bool):
            raise ValueError(
                f"[Perturbation] 'timespans' must be True or False but got {self.timespans!r}"
            )

    @property
    def name(self) -> str:
        """``clean``, ``noise 0.1``, ``irregular 0.5``, ``irregular 0.5, timespans withheld``
        or several, as the tables print it."""
        parts = [f"noise {self.noise:g}"] * (self.noise > 0)
        parts += [f"irregular {self.drop:g}"] * (self.drop > 0)
        parts += ["timespans withheld"] * (not self.timespans)
        return ", ".join(parts) or "clean"

    def timespan(self, gap: int) -> float:
        """The timespan the policy is given for an observation ``gap`` steps after the
        previous one: the gap, or 1 when timespans are withheld."""
        return float(gap) if self.timespans else 1.0

    def observed(self, rng: np.random.Generator, gap: int) -> bool:
        """Whether the observation arrives, ``gap`` steps after the previous one."""
        return gap >= self.max_gap or self.drop == 0 or rng.random() >= self.drop

    def corrupt(
        self, rng: np.random.Generator, observation: np.ndarray, scale: np.ndarray
    ) -> np.ndarray:
        """The observation with this noise added (unchanged without noise), in its dtype."""
        if self.noise == 0:
            return observation
        noise = self.noise * scale * rng.standard_normal(observation.shape)
        # In the observation's dtype, so that the policy gets what the episode records.
        return (observation + noise).astype(observation.dtype, copy=False)


CLEAN = Perturbation()
"""No perturbation: every observation, exactly, one step apart."""
NOISY = Perturbation(noise=0.1)
"""Gaussian noise of a tenth of each feature's scale."""
IRREGULAR = Perturbation(drop=0.5, max_gap=4)
"""Half the observations dropped at random (at most 3 in a row), the action held meanwhile."""
WITHHELD = Perturbation(drop=0.5, max_gap=4, timespans=False)
"""`IRREGULAR` without telling the policy the elapsed time: every timespan is 1."""
CONDITIONS = {"clean": CLEAN, "noise": NOISY, "irregular": IRREGULAR, "no timespans": WITHHELD}
"""The evaluation's conditions by name."""
