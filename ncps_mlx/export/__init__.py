"""Core ML export for the Neural Engine, and its verification where Core ML cannot run.

Needs the ``export`` extra (coremltools):

```bash
pip install 'ncps-mlx[export]'
```
"""

from .coreml import FP16_TIMESPAN_RANGE, KINDS, read_metadata, to_coreml
from .registry import register_graph
from .stepper import PackageController, PackageInfo
from .verify import CoreMLRuntime, VerifyReport, verify

__all__ = [
    "FP16_TIMESPAN_RANGE",
    "KINDS",
    "CoreMLRuntime",
    "PackageController",
    "PackageInfo",
    "VerifyReport",
    "read_metadata",
    "register_graph",
    "to_coreml",
    "verify",
]
