"""Shared pytest configuration: docstring examples that read Fashion-MNIST need a local copy.

Those examples run wherever a copy is found (CI installs one) and are skipped, with the command
that installs it, where none is, so the unit suite never downloads anything.
"""

from __future__ import annotations

from typing import List

import pytest

from d2lbn.data import locate_fashion_mnist

# Doctests (by their pytest item name) whose examples load the real data set.
NEEDS_FASHION_MNIST = {"d2lbn.data.load_fashion_mnist"}


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    if locate_fashion_mnist() is not None:
        return
    skip = pytest.mark.skip(reason="no Fashion-MNIST copy installed (sudo apt-get install dataset-fashion-mnist)")
    for item in items:
        if isinstance(item, pytest.DoctestItem) and item.name in NEEDS_FASHION_MNIST:
            item.add_marker(skip)
