"""Datasets: built-in generated tasks and loaders for real data shipped in packages."""

from ._base import SequenceData as SequenceData
from .generated import sine_waves as sine_waves
