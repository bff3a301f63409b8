"""pipeline/training.py: how many epochs task adaptation trains."""

import pytest

from oppu_jax import config as config_lib
from oppu_jax.pipeline.training import task_adaptation_epochs


@pytest.mark.parametrize("epochs, min_steps, pairs, batch, want", [
    (2, 0, 64, 16, 2),  # no floor: the paper's epochs
    (2, 8, 64, 16, 2),  # 2 epochs of 4 steps already make 8
    (2, 9, 64, 16, 3),  # whole epochs: 12 steps, never a part of one
    (2, 48, 64, 16, 12),
    (2, 48, 65, 16, 10),  # 5 steps an epoch (the last one short)
    (3, 10, 400, 16, 3),  # a large train split is left alone
])
def test_the_floor_adds_whole_epochs(epochs, min_steps, pairs, batch, want):
  got = task_adaptation_epochs(epochs, min_steps, pairs, batch)
  assert got == want
  assert got * -(-pairs // batch) >= min_steps


def test_the_default_is_the_papers_recipe():
  assert config_lib.get_config().task_adapt.min_steps == 0
