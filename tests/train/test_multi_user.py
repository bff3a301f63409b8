"""The multi-user trainer: isolation between users, slot refill, learning, sharding."""

import os
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import synthetic_users as su
from virtual_devices import run_script
from oppu_jax.data.batching import Example
from oppu_jax.errors import ConfigError
from oppu_jax.models import llama
from oppu_jax.models import adapted
from oppu_jax.peft import lora
from oppu_jax.train import multi_user
from oppu_jax.train import user_batches as ub

CFG = llama.tiny_config(vocab_size=64)


@pytest.fixture(scope="module")
def model():
  return llama.Llama(CFG, rngs=nnx.Rngs(0))


def _train(model, plans, slots, peft=None, lr=1e-2, **kw):
  peft = peft or lora.Lora(rank=4, alpha=8, dropout=0.1)
  config = multi_user.TrainConfig(learning_rate=lr, slots=slots, warmup_ratio=0.1, **kw)
  return multi_user.train_users(model, peft, plans, config)


def _rel(a, b):
  """Relative error of each adapter tensor (Frobenius norms), the worst over tensors."""
  return max(float(np.linalg.norm(x - y) / np.linalg.norm(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow
def test_user_adapter_bit_identical_when_other_users_data_changes(model):
  mine = su.plan(0, 9)
  others_a = [su.plan(i, 6 + i, seed=1) for i in range(1, 4)]
  # Same sizes and shapes, different texts and answers.
  others_b = [su.plan(i, 6 + i, seed=2, answer=50 + i) for i in range(1, 4)]
  a = _train(model, [mine, *others_a], slots=4)["user0"].adapter
  b = _train(model, [mine, *others_b], slots=4)["user0"].adapter
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_user_adapter_same_alone_in_batch_of_8_and_beside_other_sizes(model):
  mine = su.plan(0, 9)
  alone = _train(model, [mine], slots=1)["user0"].adapter
  eight = _train(model, [mine] + [su.plan(i, 9, seed=3) for i in range(1, 8)], slots=8)
  # Different history sizes shift when user0 starts (it is queued behind longer users).
  mixed = _train(model, [su.plan(i, 4 + 5 * i, seed=4) for i in range(1, 4)] + [mine], slots=2)
  assert _rel(eight["user0"].adapter, alone) <= 1e-5
  assert _rel(mixed["user0"].adapter, alone) <= 1e-5


@pytest.mark.slow
def test_slot_refill_gives_every_user_its_epochs_and_compiles_once(model):
  plans = [su.plan(i, n, epochs=e) for i, (n, e) in enumerate([(5, 2), (13, 1), (8, 3), (3, 2),
                                                                (10, 2)])]
  assert len({p.shape_key for p in plans}) == 1
  config = multi_user.TrainConfig(learning_rate=1e-2, slots=2)
  stats = {}
  results = multi_user.train_users(model, lora.Lora(rank=4), plans, config, stats=stats)
  for p in plans:
    assert results[p.user_id].steps == p.total_steps == p.steps_per_epoch * p.epochs
    assert len(results[p.user_id].losses) == p.total_steps
  # The step program: one compilation for the whole run, refills included.
  assert stats["step_compilations"] == 1
  assert stats["steps"] >= sum(p.total_steps for p in plans) / 2


@pytest.mark.slow
def test_users_looped_or_vmapped_inside_the_step_give_the_same_adapters(model):
  plans = [su.plan(i, 5 + 2 * i, seed=6) for i in range(4)]
  runs = {n: _train(model, plans, slots=4, users_per_pass=n) for n in (1, 3, 4)}  # 3: remainder
  for n in (1, 3):
    for p in plans:
      assert _rel(runs[n][p.user_id].adapter, runs[4][p.user_id].adapter) <= 1e-5, (n, p.user_id)


@pytest.mark.slow
def test_remat_is_chosen_from_the_memory_budget_and_changes_nothing(model):
  plans = [su.plan(i, 6) for i in range(3)]
  runs = {}
  for budget in (1000.0, 1e-6):  # GB: ample, then too small for any step
    stats = {}
    config = multi_user.TrainConfig(learning_rate=1e-2, slots=3, memory_budget_gb=budget)
    runs[budget] = multi_user.train_users(model, lora.Lora(rank=4, dropout=0.1), plans, config,
                                          stats=stats)
    assert list(stats["remat"].values()) == [budget < 1]
  for p in plans:
    assert _rel(runs[1e-6][p.user_id].adapter, runs[1000.0][p.user_id].adapter) <= 1e-5
  with pytest.raises(ConfigError, match="train.remat"):
    multi_user.TrainConfig(remat="sometimes")
  with pytest.raises(ConfigError, match="train.schedule"):
    multi_user.TrainConfig(schedule="fifo")


def _long_plan(user_index: int, n: int, seed: int = 0):
  """A user whose examples need T=32 (the synthetic users fit T=16)."""
  examples = [Example(np.concatenate([e.tokens[:-2], np.full(12, 5, np.int32), e.tokens[-2:]]),
                      np.concatenate([np.zeros(12, bool), e.loss_mask]))
              for e in su.user_examples(user_index, n, seed)]
  return ub.plan_user(f"long{user_index}", examples, batch_size=4, epochs=2,
                      seq_buckets=(16, 32), target_buckets=(2, 4, 8))


@pytest.mark.slow
@pytest.mark.parametrize("users_per_pass", [1, 3])  # looped (idle slots skip), vmapped
def test_padded_up_user_matches_its_own_shape_and_ignores_other_users_data(model, users_per_pass):
  """Under "refill" short users fill a long user's free slots, their rows padded from T=16 to 32:
  the same rows, so without dropout the adapter moves by rounding only. Dropout masks are drawn
  for the padded shape, so with dropout it is another sample; it still ignores the others' data."""
  mine = su.plan(0, 9)

  def run(dropout, seed=1, answer=None):
    plans = [_long_plan(1, 5, seed), mine, su.plan(2, 7, seed=seed, answer=answer)]
    stats = {}
    config = multi_user.TrainConfig(learning_rate=1e-2, slots=3, schedule="refill",
                                    users_per_pass=users_per_pass)
    result = multi_user.train_users(model, lora.Lora(rank=4, alpha=8, dropout=dropout), plans,
                                    config, stats=stats)["user0"].adapter
    assert stats["step_compilations"] == 1 and [dict(s)["tokens"] for s in stats["remat"]] == [
        (3, 4, 32)]
    return result

  alone = _train(model, [mine], slots=1, peft=lora.Lora(rank=4, alpha=8))["user0"].adapter
  assert _rel(run(0.0), alone) <= 1e-5
  for x, y in zip(jax.tree.leaves(run(0.1)), jax.tree.leaves(run(0.1, seed=2, answer=60))):
    np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_exact_schedule_compiles_each_bucket_and_keeps_shapes(model):
  mine = su.plan(0, 9)
  alone = _train(model, [mine], slots=1)["user0"].adapter
  stats = {}
  config = multi_user.TrainConfig(learning_rate=1e-2, slots=3, schedule="exact")
  results = multi_user.train_users(model, lora.Lora(rank=4, alpha=8, dropout=0.1),
                                   [_long_plan(1, 5), mine], config, stats=stats)
  assert stats["step_compilations"] == 2
  for x, y in zip(jax.tree.leaves(results["user0"].adapter), jax.tree.leaves(alone)):
    np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_progress_reports_every_step_with_user_steps_and_tokens(model):
  plans = [su.plan(i, n) for i, n in enumerate((5, 13, 10))]  # 4, 8, 6 steps; 2 slots
  reports = []
  results = multi_user.train_users(model, lora.Lora(rank=4), plans,
                                   multi_user.TrainConfig(slots=2), progress=reports.append)
  total = sum(p.total_steps for p in plans)
  assert [r.total_steps for r in reports] == [total] * len(reports)
  assert reports[-1].steps_done == total and reports[-1].users_done == 3
  assert all(r.users_total == 3 and r.tokens > 0 for r in reports)
  done = [r.steps_done for r in reports]
  assert done == sorted(done) and done[0] == 2  # both slots busy at the first step
  # Longest first: user1 (8 steps) and user2 (6) start; user0 (4) takes user2's slot.
  assert len(reports) == 10 and len(results) == 3


def test_each_user_sees_each_of_its_examples_once_per_epoch():
  p = su.plan(0, 11, epochs=3, batch_size=4)
  seen = {}
  for step in range(p.total_steps):
    batch = ub.batch_for_step(p, step, seed=0)
    for row in range(4):
      if batch["attention_mask"][row].any():
        key = tuple(batch["tokens"][row][batch["attention_mask"][row]])
        seen[key] = seen.get(key, 0) + 1
  assert sorted(seen.values()) == [3] * 11


@pytest.fixture(scope="module")
def sharp_model():
  """A random model whose output layer can express confident predictions: with the 0.02 init
  of a tiny model the logits span only about +-1, so no adapter could reach a low loss."""
  m = llama.Llama(CFG, rngs=nnx.Rngs(0))
  m.lm_head[...] = m.lm_head[...] * 20
  return m


@pytest.mark.slow
def test_lora_learns_each_users_answer_on_a_tiny_model(sharp_model):
  """The fast check; tests/train/test_learning_smollm2.py checks all three methods for real."""
  peft = lora.Lora(rank=4, alpha=8)
  plans = [su.plan(i, 12, epochs=6) for i in range(4)]
  results = _train(sharp_model, plans, slots=4, peft=peft, lr=3e-2)
  for i, p in enumerate(plans):
    r = results[p.user_id]
    assert np.mean(r.losses[-3:]) < 0.2 * np.mean(r.losses[:3])
    adapter = jax.tree.map(jnp.asarray, r.adapter)
    for ex in p.examples:
      prompt = jnp.asarray(ex.tokens[None, :-2])
      logits = adapted.forward(sharp_model, peft, adapter, prompt,
                             jnp.arange(prompt.shape[1])[None], jnp.ones_like(prompt, bool))
      assert int(logits[0, -1].argmax()) == 40 + i


@pytest.mark.slow
def test_bf16_path_learns_like_f32_and_keeps_isolation(sharp_model):
  """bf16 weights and matmuls (frozen base carried as bits, bf16 backward): the first losses follow
  the f32 run's (later, at this learning rate, rounding makes the paths diverge), it learns, and a
  user's adapter still ignores the other users' data bit for bit."""
  graphdef, state = nnx.split(sharp_model)
  bf16_model = nnx.merge(graphdef, jax.tree.map(lambda x: x.astype(jnp.bfloat16), state))
  bf16_model.config = CFG.replace(param_dtype="bfloat16", compute_dtype="bfloat16")
  peft = lora.Lora(rank=4, alpha=8)
  mine = su.plan(0, 12, epochs=4)
  others = [su.plan(i, 12, epochs=4, seed=1) for i in range(1, 3)]
  changed = [su.plan(i, 12, epochs=4, seed=2, answer=50 + i) for i in range(1, 3)]
  f32 = _train(sharp_model, [mine, *others], slots=3, peft=peft, lr=3e-2)["user0"]
  bf16 = _train(bf16_model, [mine, *others], slots=3, peft=peft, lr=3e-2)["user0"]
  bf16_changed = _train(bf16_model, [mine, *changed], slots=3, peft=peft, lr=3e-2)["user0"]
  assert np.mean(bf16.losses[-3:]) < 0.2 * np.mean(bf16.losses[:3])
  np.testing.assert_allclose(bf16.losses[:4], f32.losses[:4], rtol=0.02)
  for x, y in zip(jax.tree.leaves(bf16.adapter), jax.tree.leaves(bf16_changed.adapter)):
    np.testing.assert_array_equal(x, y)


_MESH_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, jax
    sys.path.insert(0, {tests!r})
    from flax import nnx
    import synthetic_users as su
    from oppu_jax.models import llama
    from oppu_jax.peft import lora
    from oppu_jax.sharding import mesh as mesh_lib
    from oppu_jax.train import multi_user
    assert jax.device_count() == 8, jax.device_count()
    model = llama.Llama(llama.tiny_config(vocab_size=64), rngs=nnx.Rngs(0))
    peft = lora.Lora(rank=4, alpha=8, dropout=0.1)
    def train(plans, slots, mesh=None):
      cfg = multi_user.TrainConfig(learning_rate=1e-2, slots=slots)
      return multi_user.train_users(model, peft, plans, cfg, mesh=mesh)
    mine = su.plan(0, 5)
    others = [su.plan(i, 5, seed=3) for i in range(1, 8)]
    changed = [su.plan(i, 5, seed=5, answer=55) for i in range(1, 8)]
    def rel(a, b):
      return max(float(np.linalg.norm(x - y) / np.linalg.norm(y))
                 for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    alone = train([mine], 1)
    unsharded = train([mine] + others, 8)
    # Users split over 8 devices: each device computes its users whole, so the math per user is
    # unchanged: isolation holds bit for bit, and the run equals the unsharded one.
    users_mesh = mesh_lib.make_mesh(users=8, model=1)
    sharded = train([mine] + others, 8, users_mesh)
    sharded_changed = train([mine] + changed, 8, users_mesh)
    for x, y in zip(jax.tree.leaves(sharded["user0"].adapter),
                    jax.tree.leaves(sharded_changed["user0"].adapter)):
      np.testing.assert_array_equal(x, y)
    assert rel(sharded["user0"].adapter, alone["user0"].adapter) <= 1e-5
    for u in sharded:
      assert rel(sharded[u].adapter, unsharded[u].adapter) <= 1e-5, u
    # Base weights split over a model axis too: partial sums are added in another order, so
    # equality holds within rounding; isolation must still be exact.
    mixed_mesh = mesh_lib.make_mesh(users=4, model=2)
    mixed = train([mine] + others, 8, mixed_mesh)
    mixed_changed = train([mine] + changed, 8, mixed_mesh)
    for x, y in zip(jax.tree.leaves(mixed["user0"].adapter),
                    jax.tree.leaves(mixed_changed["user0"].adapter)):
      np.testing.assert_array_equal(x, y)
    for u in mixed:
      assert rel(mixed[u].adapter, unsharded[u].adapter) <= 1e-5, u
    print("MESH-OK")
""")


@pytest.mark.slow
@pytest.mark.multiprocess
def test_isolation_and_equality_on_a_mesh_of_8_devices(tmp_path):
  run_script(tmp_path / "mesh_check.py", _MESH_SCRIPT.format(tests=os.path.dirname(__file__)),
             devices=8, done="MESH-OK")


@pytest.mark.slow
def test_gradient_accumulation_equals_one_batch_of_all_micro_batches_rows(model):
  """batch 2 x grad_accum 2 reads the rows of batch 4 (an epoch's last step has one row, then
  an all-padding micro-batch): the same adapter up to float summation order."""
  peft = lora.Lora(rank=4, alpha=8, dropout=0.0)
  whole = su.plan(0, 9, batch_size=4)
  micro = ub.plan_user("user0", su.user_examples(0, 9, 0), batch_size=2, epochs=2,
                       seq_buckets=(16, 32), target_buckets=(2, 4, 8), grad_accum=2)
  assert micro.total_steps == whole.total_steps == 6
  assert ub.batch_for_step(micro, 2, seed=0)["tokens"].shape == (2, 2, 16)
  a = _train(model, [whole], slots=1, peft=peft)["user0"]
  b = _train(model, [micro], slots=1, peft=peft)["user0"]
  np.testing.assert_allclose(b.losses, a.losses, rtol=1e-5)
  assert _rel(b.adapter, a.adapter) <= 1e-5
  # Vmapped beside another user (accelerators' path), the same.
  other = ub.plan_user("user1", su.user_examples(1, 5, 0), batch_size=2, epochs=2,
                       seq_buckets=(16, 32), target_buckets=(2, 4, 8), grad_accum=2)
  v = _train(model, [micro, other], slots=2, peft=peft, users_per_pass=2)
  assert _rel(v["user0"].adapter, a.adapter) <= 1e-5
  # Not a tautology: without accumulation, batch 2 takes other steps and ends elsewhere.
  c = _train(model, [su.plan(0, 9, batch_size=2)], slots=1, peft=peft)["user0"]
  assert _rel(c.adapter, a.adapter) > 1e-2


def test_gradient_accumulation_below_one_is_a_config_error():
  with pytest.raises(ConfigError, match="grad_accum"):
    ub.plan_user("u", su.user_examples(0, 3, 0), batch_size=2, epochs=1, seq_buckets=(16,),
                 target_buckets=(2,), grad_accum=0)


def test_a_warm_start_begins_from_the_given_adapter(model):
  """`initial`: a user enters its slot with the given adapter (at learning rate 0 it leaves with
  it unchanged); the others start fresh as before."""
  peft = lora.Lora(rank=4, alpha=8)
  plans = [su.plan(0, 6, epochs=1), su.plan(1, 6, epochs=1)]
  rng = np.random.default_rng(0)
  one = peft.init(model.weight_table(), jax.random.PRNGKey(0))
  start = jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(np.float32), one)
  config = multi_user.TrainConfig(learning_rate=0.0, slots=2)
  got = multi_user.train_users(model, peft, plans, config,
                               initial={"user0": multi_user.Start(start)}.get)
  cold = multi_user.train_users(model, peft, plans, config)
  for a, b in zip(jax.tree.leaves(got["user0"].adapter), jax.tree.leaves(start)):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(got["user1"].adapter), jax.tree.leaves(cold["user1"].adapter)):
    np.testing.assert_array_equal(a, b)
  assert got["user0"].losses[0] != cold["user0"].losses[0]  # it trained from there
