"""Datasets: built-in generated tasks and loaders for real data shipped in packages.

Every dataset is a [`SequenceData`][ncps_mlx.datasets.SequenceData]. The generators need nothing
beyond numpy; the UCR/UEA loaders need the optional ``aeon`` (``pip install 'ncps-mlx[data]'``),
imported only when a set is loaded.
"""

from ._base import SequenceData as SequenceData
from .generated import bit_stream_xor as bit_stream_xor
from .generated import irregular_oscillator as irregular_oscillator
from .generated import sine_waves as sine_waves
from .generated import spring_mass_control as spring_mass_control
from .uea import SHIPPED as SHIPPED
from .uea import basic_motions as basic_motions
from .uea import japanese_vowels as japanese_vowels
from .uea import load_uea as load_uea
