"""compress: turn BERT teachers into fast SqueezeBERT students with recipes of pluggable passes."""

from compress.errors import CompressError

__version__ = "0.1.0"
__all__ = ["CompressError", "__version__"]
