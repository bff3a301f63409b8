"""The planner: for a model, a target and a recipe, the mesh (users x model), the slots U and the
remat choice of the multi-user step that fit the chip's HBM, from the compiler's numbers.

Per model-axis size m (the users axis takes the rest of the devices), without remat first: the
step is compiled at one and at two users per users-axis position; memory grows linearly in the
slots, so the two give the largest count that should fit, which is then compiled to check (and
lowered one at a time until it fits). Remat is tried only where no slot count fits without it.
Plans are ranked by users per FLOP (what the chip's rate turns into users per hour), then by
fewer collectives (a smaller model axis); a one-line error when nothing fits.
"""

from __future__ import annotations

import dataclasses
import logging

from oppu_jax.compile_check import analysis, programs
from oppu_jax.errors import ConfigError
from oppu_jax.sharding import mesh as mesh_lib

MAX_PER_POSITION = 64  # users per users-axis position the planner tries at most


@dataclasses.dataclass
class Plan:
  users_axis: int
  model_axis: int
  remat: bool
  slots: int
  cost: analysis.Cost
  compilations: int

  @property
  def mesh_text(self) -> str:
    return f"{self.users_axis} x {self.model_axis}"


def model_axes(devices: int, limit: int = 16) -> list[int]:
  return [m for m in (1, 2, 4, 8, 16, 32) if m <= min(devices, limit) and devices % m == 0]


def plan(model, recipe, target, devices, method: str = "lora", axes=None,
         log=logging.info) -> tuple[Plan, list[Plan]]:
  """(the best plan, every mesh's plan) for `method`'s multi-user step on `target`."""
  found = []  # per mesh: its plan, or (slots 0) why one user does not fit even with remat
  for m in [m for m in axes if len(devices) % m == 0] if axes else model_axes(len(devices)):
    mesh = mesh_lib.make_mesh(len(devices) // m, m, devices)
    for remat in (False, True):
      p = _largest(model, recipe, target, mesh, method, remat, log)
      if p.slots or remat:
        found.append(p)
        break
  fitting = [p for p in found if p.slots]
  if not fitting:
    raise ConfigError(f"{target.name}: no mesh of {len(devices)} devices fits one user's "
                      f"{method} step in {target.hbm_bytes / (1 << 30):.0f} GiB per device, even "
                      "with remat; lower config.train.batch_size or model.cutoff, or take a "
                      "larger slice")
  # Users per FLOP decides (remat's recomputed forward costs ~1/3 more per user); within 1 %,
  # the smaller model axis (less communication), then more slots.
  rate = lambda p: p.slots / p.cost.flops
  top = max(rate(p) for p in fitting)
  best = max((p for p in fitting if rate(p) >= 0.99 * top),
             key=lambda p: (-p.model_axis, p.slots))
  return best, found


def _largest(model, recipe, target, mesh, method, remat, log) -> Plan:
  """The plan with the most slots on `mesh`; slots 0 (and one user's cost) if none fits."""
  u = mesh.shape["users"]
  compiled = {}

  def cost(per_position: int) -> analysis.Cost:
    if per_position not in compiled:
      program = programs.users_step(model, recipe, method, u * per_position, mesh, remat)
      compiled[per_position] = analysis.analyse(program.trace(), program.loop_trips)
      c = compiled[per_position]
      log("plan %s: mesh %d x %d, remat %s, U = %d: %.2f GiB per device%s", target.name, u,
          mesh.shape["model"], remat, u * per_position, c.bytes_per_device / (1 << 30),
          " (refused)" if c.refused else "")
    return compiled[per_position]

  fits = lambda p: cost(p).fits(target.hbm_bytes)
  if not fits(1):
    return Plan(u, mesh.shape["model"], remat, 0, cost(1), len(compiled))
  # A refused compilation says only what its temporaries need: an upper end, fine for a slope.
  slope = cost(2).bytes_per_device - cost(1).bytes_per_device
  room = target.hbm_bytes - cost(1).bytes_per_device
  best = MAX_PER_POSITION if slope <= 0 else min(MAX_PER_POSITION, 1 + int(room // slope))
  best = max(best, 1)
  while best > 1 and not fits(best):
    best -= 1
  return Plan(u, mesh.shape["model"], remat, u * best, cost(best), len(compiled))
