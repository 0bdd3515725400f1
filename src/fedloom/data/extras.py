"""Optional dependencies of the loaders, and the error that names the extra to install.

Pillow, pyarrow and Hugging Face ``datasets`` are needed only by the loaders that read
images, Parquet and HF datasets; importing :mod:`fedloom.data` must not need them.
"""

from __future__ import annotations

import importlib.util

from fedloom.core.errors import DataError


def require(module: str, extra: str, purpose: str) -> None:
    """Raise a DataError saying ``pip install 'fedloom[extra]'`` unless ``module`` is importable."""
    if importlib.util.find_spec(module) is None:
        raise DataError(
            f"reading {purpose} needs the {module} package, which is not installed: "
            f"run `pip install 'fedloom[{extra}]'`"
        )
