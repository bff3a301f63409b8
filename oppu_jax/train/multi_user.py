"""The multi-user trainer: many users' adapters train in one compiled step.

U slots (`slots.Slots`) hold U users' adapters, optimizer states, step counters, PRNG keys and
learning-rate tables. One jit-compiled step maps the loss,
gradient and AdamW update over the slots, with the frozen base weights broadcast, never copied per
user: jax.vmap on accelerators, a loop inside the step on a CPU (`TrainConfig.users_per_pass`),
where an idle slot skips its work. Each user reads only its own batches, dropout keys
(fold_in(its key, its step)) and learning rates, so its adapter is a function of its data, its
batch shape and the config alone.

`scheduler.schedule` groups the users by batch shape; a group's step is compiled once
(`compile_policy`). When a user finishes, `on_user_done` receives its adapter and the slot takes the
next user of the group: same shapes, no recompilation.

Under a mesh, two layouts: the slots split over the mesh's users axis (the per-user stage, each
process on its own devices), or, with `data_parallel`, one user's batch rows split over the users
axis of a mesh that may span processes (task adaptation: XLA reduces the gradients); the base is
split over the model axis in both.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from oppu_jax import config as config_lib
from oppu_jax.models import backend
from oppu_jax.models.interface import LanguageModel
from oppu_jax.sharding import mesh as mesh_lib
from oppu_jax.train import compile_policy, optim, scheduler
from oppu_jax.train.loss import loss_terms
from oppu_jax.train.slots import Slots, learning_rates
from oppu_jax.train.user_batches import UserBatches, UserPlan, user_seed


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
  # such groups. 0 = auto: all U where batching fills the chip (accelerators, a mesh), 1 where the
  # backend policy loops users (models/backend.py: the CPU).
  users_per_pass: int = 0
  # scheduler policy: "refill" pads smaller users up into a group's free slots, "exact" keeps
  # buckets apart; "auto": refill when users are vmapped (an idle slot costs a full user), exact
  # when looped (an idle slot is free; padding up costs, e.g. SmolLM2 T=96 vs 80: +38 % per step).
  schedule: str = "auto"

  def __post_init__(self):
    # config.CHOICES holds the allowed values (config.check reads it too): one list, one message.
    config_lib.check_choice("train.remat", self.remat)
    config_lib.check_choice("train.schedule", self.schedule)


@dataclasses.dataclass
class UserResult:
  user_id: str
  adapter: Any  # host (numpy) pytree
  losses: list[float]  # one per step, the user's own batch loss
  steps: int
  opt_state: Any = None  # host (numpy) pytree: the optimizer's state after the last step


def optimizer(config: TrainConfig):
  """Each user's optimizer (its learning rate comes with the schedule, per step): the one place
  it is built, so a saved state (pipeline/update.py) is rebuilt with the same tree."""
  return optim.adamw_without_lr(config.weight_decay, config.clip_norm)


@dataclasses.dataclass(frozen=True)
class Start:
  """Where a user's training starts instead of a fresh adapter: a warm start (`opt_state` None:
  a fresh optimizer) or the continuation of an earlier training (its optimizer state's tree)."""

  adapter: Any
  opt_state: Any = None


@dataclasses.dataclass(frozen=True)
class StepReport:
  """Progress after one step of `train_users`; steps count user-steps (a user's own batches)."""

  steps_done: int
  total_steps: int  # all users' steps of this call
  tokens: int  # real (unpadded) tokens of this step
  users_done: int
  users_total: int
  computed: int = 0  # token positions the occupied slots computed (padding included)
  idle_slots: int = 0  # slots without a user this step (skipped when looped, masked if vmapped)


def train_users(
    model: LanguageModel,
    peft,
    plans: Iterable[UserPlan],
    config: TrainConfig,
    *,
    on_user_done: Callable[[UserResult], None] | None = None,
    mesh=None,
    progress: Callable[[StepReport], None] | None = None,
    stats: dict | None = None,
    data_parallel: bool = False,
    checkpoints=None,
    initial: Callable[[str], Start | None] | None = None,
) -> dict[str, UserResult]:
  """Trains one adapter per plan; returns user id -> UserResult (also passed to on_user_done).

  progress(StepReport) is called after every step; `stats`, if given, gets "step_compilations"
  (compilations of the step), "steps" and "remat" (batch shape -> whether that step recomputes
  activations). data_parallel: one plan, its rows split over the mesh's users axis.
  checkpoints: a `preemption.StageCheckpoints` to resume from and save to (one plan only).
  initial(user id): the `Start` of a user (None, or no `initial`: a fresh adapter and optimizer).
  """
  plans = list(plans)
  if (data_parallel or checkpoints is not None) and len(plans) != 1:
    raise ValueError("data_parallel and checkpoints train exactly one plan")
  max_steps = max((p.total_steps for p in plans), default=1)
  program = _StepProgram(model, peft, config, mesh, max_steps, data_parallel)
  policy = config.schedule
  if policy == "auto":
    policy = "refill" if program.users_per_pass(config.slots) > 1 else "exact"
  per_device = mesh.shape["users"] if mesh is not None and not data_parallel else 1
  results: dict[str, UserResult] = {}
  report = StepReport(0, sum(p.total_steps for p in plans), 0, 0, len(plans))
  for group in scheduler.schedule(plans, config.slots, policy, per_device):
    logging.info("training %d users with batch shape (T, K[, S]) = %s", len(group.plans),
                 group.shape)
    report = _train_group(program, group, config, report, results, on_user_done, progress,
                          checkpoints, initial)
  if stats is not None:
    stats.update(step_compilations=program.compilations(), steps=program.steps,
                 remat=dict(program.remat_used))
  return results


def trace_step(model: LanguageModel, peft, config: TrainConfig, batches: dict, *, mesh,
               max_steps: int, remat: bool, data_parallel: bool = False):
  """The train step of `train_users` over `config.slots` slots, traced (`jax.stages.Traced`:
  its jaxpr, `.lower().compile()`) for `batches` (the stacked [U, ...] batch of one step: arrays
  or jax.ShapeDtypeStructs) without running it. `model` may be abstract (`nnx.eval_shape`) and
  `mesh` made of devices this host does not have (a TPU topology): every input is placed
  abstractly with the shardings the trainer gives it. For `oppu_jax.compile_check`."""
  program = _StepProgram(model, peft, config, mesh, max_steps, data_parallel)
  one = jax.eval_shape(lambda e: peft.init(program.table, jax.random.PRNGKey(0), e),
                       program.embed)
  slots = jax.eval_shape(lambda: Slots.empty(peft, one, program.tx.init(one), config.slots,
                                             max_steps))
  batches = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), batches)
  if mesh is not None:
    slots = mesh_lib.put(slots, program._slots_sharding)
    batches = program.placed(batches)
  return program._jits[remat].trace(program.base, slots, batches)


@dataclasses.dataclass
class _Occupant:
  plan: UserPlan
  batches: UserBatches
  losses: list[float] = dataclasses.field(default_factory=list)


def _train_group(program, group, config, report, results, on_user_done, progress, checkpoints,
                 initial):
  queue = list(group.plans)
  occupants: list[_Occupant | None] = [None] * group.slots
  slots = program.fresh_slots(group.slots)
  for slot in range(group.slots):  # the first users enter together
    slots = _fill(program, slots, occupants, slot, queue, group, config, initial)
  restored = checkpoints.restore(slots) if checkpoints is not None else None
  if restored is not None:  # one occupant: its state and losses at the checkpoint's step
    slots, occupants[0].losses = restored
    report = dataclasses.replace(report, steps_done=report.steps_done + len(restored[1]))
  idle = None
  while any(occupants):
    batches = [o.batches(len(o.losses)) if o else None for o in occupants]
    idle = idle or {k: np.zeros_like(v) for k, v in next(b for b in batches if b).items()}
    batches = [b or idle for b in batches]
    stacked = {k: np.stack([b[k] for b in batches]) for k in idle}
    slots, losses = program.step(slots, stacked)
    losses = np.asarray(losses)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches if b is not idle)
    idle_slots = sum(o is None for o in occupants)
    computed = (len(occupants) - idle_slots) * stacked["attention_mask"][0].size
    steps_done, users_done = report.steps_done, report.users_done
    for slot, occupant in enumerate(occupants):
      if occupant is None:
        continue
      occupant.losses.append(float(losses[slot]))
      steps_done += 1
      if len(occupant.losses) == occupant.plan.total_steps:
        result = UserResult(occupant.plan.user_id, slots.adapters.user(slot), occupant.losses,
                            len(occupant.losses),
                            jax.tree.map(lambda x: np.asarray(x[slot]), slots.opt_states))
        results[result.user_id] = result
        if on_user_done is not None:
          on_user_done(result)
        users_done += 1
        slots = _fill(program, slots, occupants, slot, queue, group, config, initial)
    report = dataclasses.replace(report, steps_done=steps_done, tokens=tokens,
                                 users_done=users_done, computed=computed, idle_slots=idle_slots)
    if checkpoints is not None and occupants[0] is not None:  # (none after the last step)
      checkpoints.maybe_save(len(occupants[0].losses), slots, occupants[0].losses)
    if progress is not None:
      progress(report)
  return report


def _fill(program, slots, occupants, slot, queue, group, config, initial=None):
  """The next queued user (if any) enters `slot` with its schedule: a fresh adapter and optimizer
  state, or those of its `initial(user id)` (an adapter alone gets a fresh optimizer state)."""
  occupants[slot] = None
  if not queue:
    return slots  # the slot's step counter has reached its total: the step leaves it idle
  plan = queue.pop(0)
  occupants[slot] = _Occupant(plan, UserBatches(plan, config.seed, shape=group.shape))
  lrs = learning_rates(plan.total_steps, config.warmup_ratio, config.learning_rate,
                       program.max_steps)
  key = np.asarray(jax.random.PRNGKey(user_seed(config.seed, plan.user_id)))
  start = initial(plan.user_id) if initial is not None else None
  return program.enter(slots, slot, key, plan.total_steps, lrs, start)


class _StepProgram:
  """The compiled pieces: the train step over all slots, and a slot's refill."""

  def __init__(self, model: LanguageModel, peft, config: TrainConfig, mesh, max_steps: int,
               data_parallel: bool = False):
    self.graphdef, self.base = nnx.split(model)
    # The base is never trained: on CPU its bf16 stacks go in as free uint16 views, with their
    # transposes for the backward pass (backend.py); a mesh places the plain arrays.
    self.base = backend.frozen_base(self.base, model.config, model.weight_table(),
                                    transposed=mesh is None)
    self.model_config, self.table = model.config, model.weight_table()
    self.embed = self.local_embed = model.embed.get_value()  # prompt tuning initialises from it
    self.peft, self.config, self.mesh, self.max_steps = peft, config, mesh, max_steps
    self.tx = optimizer(config)
    self.steps, self._compiles = 0, 0  # host-side counts
    self.remat_used = {}  # batch shape -> whether its step recomputes activations
    self.data_parallel = data_parallel and mesh is not None
    # Data parallelism: the outputs (slots, losses) are whole on every device of every process.
    out = {"out_shardings": mesh_lib.replicated(mesh)} if self.data_parallel else {}
    self._jits = {
        remat: jax.jit(functools.partial(self._step_impl, remat=remat), donate_argnums=(1,),
                       **out)
        for remat in (False, True)
    }
    self._compiled = {}
    self._enter = jax.jit(self._enter_impl, donate_argnums=(0,), **out)
    self._enter_from = jax.jit(self._enter_from_impl, donate_argnums=(0,), **out)
    if mesh is not None:
      self.base = mesh_lib.shard_base(self.base, mesh, self.table)
      self._slots_sharding = (mesh_lib.replicated(mesh) if self.data_parallel
                              else mesh_lib.users_sharding(mesh))
      if self.data_parallel:
        self.embed = mesh_lib.put(self.embed, mesh_lib.replicated(mesh))

  def fresh_slots(self, n: int) -> Slots:
    one = self.peft.init(self.table, jax.random.PRNGKey(0), self.local_embed)
    slots = Slots.empty(self.peft, one, self.tx.init(one), n, self.max_steps)
    return slots if self.mesh is None else mesh_lib.put(slots, self._slots_sharding)

  def enter(self, slots: Slots, slot: int, key, total: int, lrs, start: Start | None = None
            ) -> Slots:
    if start is not None:
      return self._enter_from(slots, slot, key, total, lrs, start.adapter, start.opt_state)
    return self._enter(slots, slot, key, total, lrs, self.embed)

  def _enter_impl(self, slots, slot, key, total, lrs, embed):
    fresh = self.peft.init(self.table, key, embed)
    return slots.enter(slot, fresh, self.tx.init(fresh), key, total, lrs)

  def _enter_from_impl(self, slots, slot, key, total, lrs, adapter, opt_state):
    # (in the slots' dtypes: a generated adapter may come in another float type)
    adapter = jax.tree.map(lambda a, like: jnp.asarray(a, like.dtype), adapter,
                           slots.adapters.tree)
    if opt_state is None:
      opt_state = self.tx.init(adapter)
    return slots.enter(slot, adapter, opt_state, key, total, lrs)

  def step(self, slots: Slots, batches: dict[str, np.ndarray]):
    """One step of every occupied slot -> (slots, losses [U]; 0 for idle slots)."""
    batches = self.placed(batches)
    self.steps += 1
    args = (self.base, slots, batches)
    shape = tuple((k, v.shape) for k, v in sorted(batches.items()))
    if shape not in self._compiled:
      executable, remat, count = compile_policy.compile_step(
          self._jits, args, remat=self.config.remat, model_remat=self.model_config.remat,
          budget_gb=self.config.memory_budget_gb, label=shape)
      self._compiles += count
      self.remat_used[shape] = remat
      # Under a mesh, the slots' shardings after a step or a refill need not be the ones the
      # executable was compiled for; jit reshards (at the price of compiling once more).
      self._compiled[shape] = executable if self.mesh is None else self._jits[remat]
    return self._compiled[shape](*args)

  def placed(self, batches: dict) -> dict:
    """A step's batches where the step reads them: under data parallelism each [U, (A,) B, T]
    array's rows (axis -2) split over the users axis, else the slots' layout."""
    if self.data_parallel:
      return {k: mesh_lib.put(v, mesh_lib.rows_sharding(self.mesh, v.shape, v.ndim - 2))
              for k, v in batches.items()}
    if self.mesh is not None:
      return mesh_lib.put(batches, self._slots_sharding)
    return batches

  def compilations(self) -> int:
    """Compilations of the step: ours, plus (under a mesh) jit's on a changed input sharding."""
    return self._compiles + sum(j._cache_size() for j in self._jits.values())

  def users_per_pass(self, users: int) -> int:
    if self.config.users_per_pass > 0:
      return min(self.config.users_per_pass, users)
    looped = self.mesh is None and backend.policy(self.model_config.backend).loop_users
    return 1 if looped else users

  def _step_impl(self, base, slots: Slots, batches, remat):
    def one_user(adapter, opt_state, batch, lr, key):
      if batch["tokens"].ndim == 3:  # [A, B, T]: gradient accumulation over A micro-batches
        loss, grads = self._accumulated_grads(adapter, base, batch, key, remat)
      else:
        loss, grads = jax.value_and_grad(self._loss)(adapter, base, batch, key, remat)
      with jax.named_scope("optimizer"):  # names the ops in a profile (pipeline_profile.py)
        updates, opt_state = self.tx.update(grads, opt_state, adapter)
        adapter = jax.tree.map(lambda p, u: p - lr * u, adapter, updates)
      return adapter, opt_state, loss

    def slot_step(adapter, opt_state, batch, step, key, lr_row):
      return one_user(adapter, opt_state, batch, lr_row[step], jax.random.fold_in(key, step))

    def looped_slot(adapter, opt_state, batch, step, key, total, lr_row):
      # An idle slot skips the forward/backward: cond stays a branch inside a loop (with
      # users_per_pass > 1 each pass is vmapped, and there it computes both branches).
      return jax.lax.cond(step < total, slot_step,
                          lambda a, o, *_: (a, o, jnp.zeros((), jnp.float32)),
                          adapter, opt_state, batch, step, key, lr_row)

    per_slot = (slots.adapters.tree, slots.opt_states, batches, slots.step, slots.key)
    users = slots.step.shape[0]
    per_pass = self.users_per_pass(users)
    if per_pass >= users:
      # Under vmap a cond would become a select computing both branches: an idle slot stays
      # masked instead (its batch is all padding with zero target weight; its result unused).
      adapters, opt_states, losses = jax.vmap(slot_step)(*per_slot, slots.lr)
    else:
      # The same per-user function, looped: each user's math is unchanged, only the order differs.
      adapters, opt_states, losses = jax.lax.map(
          lambda xs: looped_slot(*xs), (*per_slot, slots.total, slots.lr),
          batch_size=per_pass if per_pass > 1 else None)
    return slots.stepped(adapters, opt_states), losses

  def _loss(self, adapter, base, batch, key, remat=False):
    """Mean cross-entropy over the user's target tokens; logits only at target positions."""
    total, weight = self._loss_terms(adapter, base, batch, key, remat)
    return total / jnp.maximum(weight, 1.0)

  def _accumulated_grads(self, adapter, base, batches, key, remat):
    """(loss, grads) of one optimizer step over micro-batches [A, B, ...]: the summed
    cross-entropy of all A micro-batches over their summed target weight, i.e. exactly the loss
    of one batch holding all their rows; micro-batch i's dropout key is fold_in(key, i)."""
    def micro(carry, xs):
      batch, i = xs
      grad_fn = jax.value_and_grad(
          lambda a: self._loss_terms(a, base, batch, jax.random.fold_in(key, i), remat),
          has_aux=True)  # the summed loss is differentiated; its weight rides along as aux
      (total, weight), grads = grad_fn(adapter)
      loss_sum, grad_sum, weight_sum = carry
      return (loss_sum + total, jax.tree.map(jnp.add, grad_sum, grads), weight_sum + weight), None

    zeros = jax.tree.map(jnp.zeros_like, adapter)
    accum = batches["tokens"].shape[0]
    (total, grads, weight), _ = jax.lax.scan(
        micro, (jnp.zeros((), jnp.float32), zeros, jnp.zeros((), jnp.float32)),
        (batches, jnp.arange(accum)))
    weight = jnp.maximum(weight, 1.0)
    return total / weight, jax.tree.map(lambda g: g / weight, grads)

  def _loss_terms(self, adapter, base, batch, key, remat=False):
    return loss_terms(self.graphdef, self.peft, adapter, base, batch, key, remat)

