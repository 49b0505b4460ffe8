"""Fixtures of the math-recipe tests."""

from __future__ import annotations

import pytest

from tests.math_recipe.hub_fixtures import FakeHub


@pytest.fixture
def fake_hub(monkeypatch):
    def install(tables: dict) -> FakeHub:
        hub = FakeHub(tables)
        monkeypatch.setattr("datasets.load_dataset", hub)
        return hub

    return install
