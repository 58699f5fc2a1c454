"""Shared pytest configuration: tests and docstring examples that read the real Fashion-MNIST.

They are marked ``fashion_mnist`` (docstring examples are listed by name below, since a doctest
cannot carry a marker). They run wherever a copy is found (CI installs one) and are skipped,
with the command that installs it, where none is, so the suite never downloads anything. With
``D2LBN_REQUIRE_DATA=1`` (CI sets it) a missing copy stops the run instead: there, a d2lbn that
cannot find the installed copy is a bug the skipped tests would otherwise hide.
"""

from __future__ import annotations

import os
from typing import List

import pytest

from d2lbn.data import locate_fashion_mnist

# Doctests (by their pytest item name) whose examples load the real data set.
DOCTESTS_NEEDING_FASHION_MNIST = {"d2lbn.data.load_fashion_mnist"}


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    if locate_fashion_mnist() is not None:
        return
    if os.environ.get("D2LBN_REQUIRE_DATA", "") not in ("", "0"):
        raise pytest.UsageError(
            "D2LBN_REQUIRE_DATA is set, but d2lbn finds no Fashion-MNIST copy (run python -m d2lbn to "
            "see where it looked); the tests that read the real data would be skipped"
        )
    skip = pytest.mark.skip(reason="no Fashion-MNIST copy installed (sudo apt-get install dataset-fashion-mnist)")
    for item in items:
        doctest_needs_it = isinstance(item, pytest.DoctestItem) and item.name in DOCTESTS_NEEDING_FASHION_MNIST
        if doctest_needs_it or item.get_closest_marker("fashion_mnist") is not None:
            item.add_marker(skip)
