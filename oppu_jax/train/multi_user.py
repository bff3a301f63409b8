"""The multi-user trainer: many users' adapters train in one compiled step.

The adapters and optimizer states of U users form one pytree whose leaves carry a leading [U]
axis. One jit-compiled step maps the loss, gradient and AdamW update over that axis, with the
frozen base weights broadcast, never copied per user: jax.vmap on accelerators, a loop inside the
step on a CPU (`TrainConfig.users_per_pass`). The step is compiled once per batch shape, with
activation recomputation (remat) only if XLA's memory plan exceeds the budget. Each user reads only its own
batches, its own dropout keys and its own learning-rate schedule, so its adapter is a function of
its data and the config alone.

Users are grouped by their batch shape (T, K) — buckets of their own data. Within a group, U slots
stay busy: when a user finishes its epochs, `on_user_done` receives its adapter (to write it out)
and the slot takes the next user with a fresh adapter and optimizer state: same shapes, no
recompilation.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from oppu_jax.models.llama import Llama, weight_table, with_frozen_bits
from oppu_jax.peft.apply import forward
from oppu_jax.train import optim
from oppu_jax.train.user_batches import UserPlan, batch_for_step, empty_batch, user_seed


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  learning_rate: float = 1e-3
  weight_decay: float = 1e-2
  clip_norm: float = 0.3
  warmup_ratio: float = 0.1
  slots: int = 8  # U: users trained side by side in one step
  seed: int = 0
  # Recompute each layer's activations in the backward pass: "auto" does so only for a step whose
  # planned memory exceeds the budget; "always" / "never" force it.
  remat: str = "auto"
  memory_budget_gb: float = 0.0  # 0: 90 % of the memory available when the step is compiled
  # Users whose forward/backward run together (vmapped) inside the one step; the step loops over
  # such groups. 0 = auto: all U on accelerators or a mesh, where batching fills the chip; 1 on a
  # CPU, which is compute-bound and loses cache locality on a U-times larger working set
  # (SmolLM2, 8 users x 4 x 128 tokens: 28 % slower per token vmapped than one by one).
  users_per_pass: int = 0

  def __post_init__(self):
    if self.remat not in ("auto", "always", "never"):
      raise ValueError(f"train.remat: {self.remat!r}; choose auto, always or never")


@dataclasses.dataclass
class UserResult:
  user_id: str
  adapter: Any  # host (numpy) pytree
  losses: list[float]  # one per step, the user's own batch loss
  steps: int


def train_users(
    model: Llama,
    peft,
    plans: Iterable[UserPlan],
    config: TrainConfig,
    *,
    on_user_done: Callable[[UserResult], None] | None = None,
    mesh=None,
    progress: Callable[[int, int], None] | None = None,
    stats: dict | None = None,
) -> dict[str, UserResult]:
  """Trains one adapter per plan; returns user id -> UserResult (also passed to on_user_done).

  progress(tokens_in_step, users_finished) is called after every step; `stats`, if given, gets
  "step_compilations" (how many times the step was traced, i.e. compiled), "steps" and "remat"
  (batch shape -> whether that step recomputes activations).
  """
  plans = list(plans)
  trainer = _StepFunctions(model, peft, config, mesh)
  results: dict[str, UserResult] = {}
  groups: dict[tuple[int, int], list[UserPlan]] = {}
  for plan in plans:
    groups.setdefault(plan.shape_key, []).append(plan)
  for shape_key, group in sorted(groups.items()):
    logging.info("training %d users with batch shape (T, K) = %s", len(group), shape_key)
    _train_group(trainer, group, config, results, on_user_done, progress)
  if stats is not None:
    stats["step_compilations"] = trainer.traces
    stats["steps"] = trainer.steps
    stats["remat"] = dict(trainer.remat_used)
  return results


def _train_group(trainer, group, config, results, on_user_done, progress):
  slots = min(config.slots, len(group))
  if trainer.mesh is not None:
    # The users axis must divide evenly over the devices that hold it.
    per = trainer.mesh.shape["users"]
    slots = -(-slots // per) * per
  queue = list(group)
  occupant: list[UserPlan | None] = [None] * slots
  step_of = [0] * slots
  losses: list[list[float]] = [[] for _ in range(slots)]
  adapters, opt_states = trainer.fresh_slots(slots)

  def fill(slot):
    nonlocal adapters, opt_states
    occupant[slot] = queue.pop(0) if queue else None
    step_of[slot] = 0
    losses[slot] = []
    if occupant[slot] is not None:
      key = jax.random.PRNGKey(user_seed(config.seed, occupant[slot].user_id))
      adapters, opt_states = trainer.reset_slot(adapters, opt_states, slot, key)

  for slot in range(slots):
    fill(slot)
  while any(p is not None for p in occupant):
    batches, lrs, keys = [], np.zeros(slots, np.float32), np.zeros((slots, 2), np.uint32)
    tokens = 0
    for slot, plan in enumerate(occupant):
      if plan is None:
        batches.append(empty_batch(group[0]))
        continue
      batch = batch_for_step(plan, step_of[slot], config.seed)
      tokens += int(batch["attention_mask"].sum())
      batches.append(batch)
      lrs[slot] = optim.linear_schedule(step_of[slot], plan.total_steps, config.warmup_ratio,
                                        config.learning_rate)
      keys[slot] = np.asarray(jax.random.fold_in(
          jax.random.PRNGKey(user_seed(config.seed, plan.user_id)), step_of[slot]))
    stacked = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
    adapters, opt_states, step_losses = trainer.step(adapters, opt_states, stacked, lrs, keys)
    step_losses = np.asarray(step_losses)
    finished = 0
    for slot, plan in enumerate(occupant):
      if plan is None:
        continue
      losses[slot].append(float(step_losses[slot]))
      step_of[slot] += 1
      if step_of[slot] == plan.total_steps:
        result = UserResult(plan.user_id, trainer.take_slot(adapters, slot), losses[slot],
                            step_of[slot])
        results[plan.user_id] = result
        if on_user_done is not None:
          on_user_done(result)
        finished += 1
        fill(slot)
    if progress is not None:
      progress(tokens, finished)


class _StepFunctions:
  """The compiled pieces: the vmapped train step, slot reset, and slot read-out."""

  def __init__(self, model: Llama, peft, config: TrainConfig, mesh):
    self.graphdef, self.base = nnx.split(model)
    self.base = with_frozen_bits(self.base)  # the base is never trained; see layers.frozen_bits
    self.model_config = model.config
    self.embed = model.embed[...]
    self.peft = peft
    self.mesh = mesh
    self.tx = optim.adamw_without_lr(config.weight_decay, config.clip_norm)
    self.config = config
    self.traces = 0
    self.steps = 0
    self.remat_used = {}  # batch shape -> whether its step recomputes activations
    self._jits = {
        remat: jax.jit(functools.partial(self._step_impl, remat=remat), donate_argnums=(1, 2))
        for remat in (False, True)
    }
    self._compiled = {}
    self._reset = jax.jit(self._reset_impl, donate_argnums=(0, 1))
    if mesh is not None:
      from oppu_jax.train import mesh as mesh_lib

      self.base = mesh_lib.shard_base(self.base, mesh)
      self._users = mesh_lib.users_sharding(mesh)

  def fresh_slots(self, slots: int):
    key = jax.random.PRNGKey(0)
    one = self.peft.init(weight_table(self.model_config), key, self.embed)
    adapters = jax.tree.map(lambda x: jnp.zeros((slots, *x.shape), x.dtype), one)
    opt_states = jax.tree.map(lambda x: jnp.zeros((slots, *x.shape), x.dtype),
                              self.tx.init(one))
    if self.mesh is not None:
      adapters = jax.device_put(adapters, self._users)
      opt_states = jax.device_put(opt_states, self._users)
    return adapters, opt_states

  def reset_slot(self, adapters, opt_states, slot: int, key):
    return self._reset(adapters, opt_states, slot, key, self.embed)

  def _reset_impl(self, adapters, opt_states, slot, key, embed):
    fresh = self.peft.init(weight_table(self.model_config), key, embed)
    fresh_opt = self.tx.init(fresh)
    put = lambda stacked, new: stacked.at[slot].set(new)
    return jax.tree.map(put, adapters, fresh), jax.tree.map(put, opt_states, fresh_opt)

  def take_slot(self, adapters, slot: int):
    return jax.tree.map(lambda x: np.asarray(x[slot]), adapters)

  def step(self, adapters, opt_states, batches, lrs, keys):
    if self.mesh is not None:
      batches, lrs, keys = jax.device_put((batches, lrs, keys), self._users)
    self.steps += 1
    args = (self.base, adapters, opt_states, batches, lrs, keys)
    shape = tuple((k, v.shape) for k, v in sorted(batches.items()))
    if shape not in self._compiled:
      self._compiled[shape] = self._compile(shape, args)
    return self._compiled[shape](*args)

  def _compile(self, shape, args):
    """Compiles the step for one batch shape, with remat only if it would not fit otherwise."""
    remat = self.config.remat == "always" or self.model_config.remat
    compiled = self._jits[remat].lower(*args).compile()
    need, budget = _planned_bytes(compiled), _memory_budget(self.config)
    if not remat and self.config.remat == "auto" and need is not None and need > budget:
      logging.info("the step for batch shape %s plans %.1f GB > the %.1f GB budget: recomputing "
                   "activations in the backward pass (remat)", shape, need / 1e9, budget / 1e9)
      remat, compiled = True, self._jits[True].lower(*args).compile()
      need = _planned_bytes(compiled)
    if need is not None and need > budget:
      logging.warning("the step for batch shape %s plans %.1f GB, over the %.1f GB budget; lower "
                      "train.slots or train.batch_size if it runs out of memory", shape,
                      need / 1e9, budget / 1e9)
    self.remat_used[shape] = remat
    if self.mesh is not None:
      # Under a mesh, the slots' shardings after a step or a refill need not be the ones the
      # executable was compiled for; jit reshards (at the price of compiling once more).
      return self._jits[remat]
    return compiled

  def _step_impl(self, base, adapters, opt_states, batches, lrs, keys, remat):
    self.traces += 1  # runs only while tracing: one per compilation
    def one_user(adapter, opt_state, batch, lr, key):
      loss, grads = jax.value_and_grad(self._loss)(adapter, base, batch, key, remat)
      updates, opt_state = self.tx.update(grads, opt_state, adapter)
      adapter = jax.tree.map(lambda p, u: p - lr * u, adapter, updates)
      return adapter, opt_state, loss

    per_user = (adapters, opt_states, batches, lrs, keys)
    users = lrs.shape[0]
    per_pass = self.users_per_pass(users)
    if per_pass >= users:
      return jax.vmap(one_user)(*per_user)
    # The same per-user function, looped: each user's math is unchanged, only the order differs.
    return jax.lax.map(lambda xs: one_user(*xs), per_user,
                       batch_size=per_pass if per_pass > 1 else None)

  def users_per_pass(self, users: int) -> int:
    if self.config.users_per_pass > 0:
      return min(self.config.users_per_pass, users)
    return 1 if self.mesh is None and jax.default_backend() == "cpu" else users

  def _loss(self, adapter, base, batch, key, remat=False):
    """Mean cross-entropy over the user's target tokens; logits only at target positions."""
    model = nnx.merge(self.graphdef, base)
    if remat:
      model.config = model.config.replace(remat=True)
    hidden = forward(model, self.peft, adapter, batch["tokens"], batch["positions"],
                     batch["attention_mask"], rng=key, return_hidden=True)  # [B, T, D]
    at_targets = jnp.take_along_axis(hidden, batch["target_index"][..., None], axis=1)  # [B,K,D]
    logits = model.logits(at_targets)  # [B, K, V]
    log_z = jax.nn.logsumexp(logits, axis=-1)
    gold = jnp.take_along_axis(logits, batch["target_ids"][..., None], axis=-1)[..., 0]
    weight = batch["target_weight"]
    return jnp.sum((log_z - gold) * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def _planned_bytes(compiled) -> int | None:
  """Memory the step needs beyond its inputs: XLA's temporaries and its non-donated outputs."""
  try:
    m = compiled.memory_analysis()
    return int(m.temp_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes)
  except Exception:  # not every backend reports it
    return None


def _memory_budget(config: TrainConfig) -> int:
  if config.memory_budget_gb > 0:
    return int(config.memory_budget_gb * 1e9)
  stats = jax.devices()[0].memory_stats() or {}
  if "bytes_limit" in stats:  # accelerators
    return int(0.9 * (stats["bytes_limit"] - stats.get("bytes_in_use", 0)))
  try:  # CPU: what the operating system can still give
    with open("/proc/meminfo") as f:
      info = dict(line.split(":", 1) for line in f)
    return int(0.9 * int(info["MemAvailable"].split()[0]) * 1024)
  except (OSError, KeyError, ValueError):
    return 2**62
