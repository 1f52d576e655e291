"""Locating data folders shipped inside installed Python packages, without importing them."""

import importlib.util
from pathlib import Path

from jaxden.data.errors import DataError


def package_folder(package: str, pip_name: str, *parts: str) -> Path:
    """The folder ``parts`` inside the installed ``package`` (DataError if absent)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"Python package {package!r} is not installed: run `pip install "
                        f"{pip_name}` (or `pip install -e .` for all of jaxden's dependencies)")
    folder = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not folder.is_dir():
        raise DataError(f"{folder} is missing from the installed {pip_name}: reinstall it with "
                        f"`pip install --force-reinstall {pip_name}`")
    return folder
