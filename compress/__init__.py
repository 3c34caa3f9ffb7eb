"""compress: turn BERT teachers into fast SqueezeBERT students with recipes of pluggable passes."""

from compress.core.errors import CompressError

__version__ = "0.2.0"
__all__ = ["CompressError", "__version__"]
