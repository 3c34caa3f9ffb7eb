"""Running a recipe: the pass registry, the state passes share, the runner, model cards.

Plugin authors subclass `Pass` (with a `PassConfig` for its options); see `compress.pipeline.registry`.
"""

from compress.pipeline.registry import Pass, PassConfig

__all__ = ["Pass", "PassConfig"]
