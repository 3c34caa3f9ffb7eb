"""compress: turn BERT teachers into fast SqueezeBERT students with recipes of pluggable passes."""

import logging

from compress.core.errors import CompressError

# With the executorch extra installed, transformers imports torchao at start-up; torchao's notes about CUDA
# kernels this CPU build lacks and torch's pytree deprecation notes would open every command's output.
for _noisy in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)

__version__ = "0.2.0"
__all__ = ["CompressError", "__version__"]
