"""The serving tests' tiny model (peaked distributions: greedy choices not decided by float noise)
and three users' LoRA adapters that really differ."""

import pytest

from eval import eval_fixtures as ef


@pytest.fixture(scope="module")
def model():
  return ef.tiny_model(scale=0.15)


@pytest.fixture(scope="module")
def adapters(model):
  return ef.stacked_adapters(model, ef.METHODS["lora"])
