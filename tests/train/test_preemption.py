"""Preemption checkpoints: a training run stopped after a checkpoint and started again ends with
the adapter, losses and step count of the run that was never stopped, bit for bit."""

import jax
import numpy as np
import pytest
from flax import nnx

import synthetic_users as su
from oppu_jax.models import llama
from oppu_jax.peft import lora
from oppu_jax.train import multi_user, preemption


class Preempted(Exception):
  pass


def _train(model, plan, checkpoints=None, stop_after=None):
  cfg = multi_user.TrainConfig(learning_rate=1e-2, slots=1)
  peft = lora.Lora(targets=("q", "v"), rank=4, alpha=8.0, dropout=0.1)  # dropout: keys matter

  def progress(report):
    if stop_after is not None and report.steps_done == stop_after:
      raise Preempted

  return multi_user.train_users(model, peft, [plan], cfg, checkpoints=checkpoints,
                                progress=progress)[plan.user_id]


@pytest.mark.slow
def test_a_stopped_run_resumes_from_its_checkpoint_to_the_same_adapter(tmp_path):
  model = llama.Llama(llama.tiny_config(), rngs=nnx.Rngs(0))
  plan = su.plan(0, n=10, epochs=2, batch_size=2)  # 10 steps
  whole = _train(model, plan)
  directory = str(tmp_path / "steps")
  with pytest.raises(Preempted):  # stopped at step 7: the latest checkpoint is step 6
    _train(model, plan, preemption.StageCheckpoints(directory, every=3), stop_after=7)
  resumed_from = preemption.StageCheckpoints(directory, every=3)
  assert resumed_from._manager.latest_step() == 6
  resumed = _train(model, plan, resumed_from)
  assert resumed.steps == whole.steps == 10 and resumed.losses == whole.losses
  for x, y in zip(jax.tree.leaves(resumed.adapter), jax.tree.leaves(whole.adapter), strict=True):
    np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_no_checkpoint_is_saved_when_every_is_zero(tmp_path):
  model = llama.Llama(llama.tiny_config(), rngs=nnx.Rngs(0))
  checkpoints = preemption.StageCheckpoints(str(tmp_path / "steps"), every=0)
  _train(model, su.plan(0, n=4, epochs=1, batch_size=2), checkpoints)
  assert checkpoints._manager.latest_step() is None
