"""compile_check.planner on this host's CPU: a made-up chip small enough that memory decides."""

import dataclasses

import jax
import pytest

from oppu_jax import config as config_lib
from oppu_jax.compile_check import analysis, planner, programs, shapes, targets
from oppu_jax.errors import ConfigError
from oppu_jax.sharding import mesh as mesh_lib

pytestmark = pytest.mark.slow  # some ten compilations of the tiny step


@pytest.fixture(scope="module")
def setup():
  config = config_lib.for_task("LaMP_3")
  config.model.cutoff = 64
  model = shapes.abstract_model("tiny-llama")
  recipe = programs.Recipe(config, prompt_tokens=64, answer_tokens=1)
  devices = jax.devices()[:1]
  mesh = mesh_lib.make_mesh(1, 1, devices)
  cost = lambda slots: analysis.analyse(
      programs.users_step(model, recipe, "lora", slots, mesh, False).trace(), 0)
  return model, recipe, devices, cost


def _chip(hbm_bytes: int) -> targets.Target:
  return dataclasses.replace(targets.TARGETS["v5e-4"], name="test-chip", platform="cpu",
                             devices=1, hbm_bytes=hbm_bytes)


def test_the_plan_is_the_largest_slot_count_that_fits(setup):
  model, recipe, devices, cost = setup
  one, two = cost(1).bytes_per_device, cost(2).bytes_per_device
  hbm = one + int(2.5 * (two - one))  # room for three users, not four
  best, tried = planner.plan(model, recipe, _chip(hbm), devices, log=lambda *a: None)
  assert (best.users_axis, best.model_axis, best.remat) == (1, 1, False)
  assert best.slots == 3 and [p.slots for p in tried] == [3]
  assert best.cost.bytes_per_device <= hbm < cost(4).bytes_per_device


def test_nothing_fits_is_a_one_line_error(setup):
  model, recipe, devices, cost = setup
  with pytest.raises(ConfigError, match="no mesh of 1 devices fits one user's lora step"):
    planner.plan(model, recipe, _chip(cost(1).bytes_per_device // 4), devices,
                 log=lambda *a: None)


def test_remat_is_taken_only_where_nothing_fits_without_it(setup):
  model, recipe, devices, cost = setup
  mesh = mesh_lib.make_mesh(1, 1, devices)
  with_remat = analysis.analyse(programs.users_step(model, recipe, "lora", 1, mesh, True).trace(),
                                0)
  without = cost(1)
  assert with_remat.flops > without.flops  # the recomputed forward
  if with_remat.bytes_per_device >= without.bytes_per_device:
    pytest.skip("remat saves no memory at this tiny size on this backend")
  hbm = (with_remat.bytes_per_device + without.bytes_per_device) // 2
  best, _ = planner.plan(model, recipe, _chip(hbm), devices, log=lambda *a: None)
  assert best.remat and best.slots >= 1
