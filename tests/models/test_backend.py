"""The backend policy: "cpu" and "xla" compute the same model within dtype tolerance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from oppu_jax.errors import ConfigError
from oppu_jax.models import backend
from oppu_jax.models.llama import PROJECTIONS, Llama, tiny_config

RANK = 4


def _run(backend_name, dtype, transposed=False):
  """(logits, d loss / d LoRA-style adapter, the jaxpr text) for one policy, same weights."""
  config = tiny_config(param_dtype=dtype, compute_dtype=dtype, backend=backend_name)
  model = Llama(config, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  state = backend.frozen_base(state, config, model.weight_table(), transposed=transposed)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 9), 3, config.vocab_size)
  positions = jnp.broadcast_to(jnp.arange(9), (2, 9))
  mask = jnp.ones((2, 9), bool).at[1, :3].set(False)
  ka, kb = jax.random.split(jax.random.PRNGKey(2))
  d, n = config.hidden_size, config.num_layers
  adapter = {"a": 0.1 * jax.random.normal(ka, (n, d, RANK)),
             "b": 0.1 * jax.random.normal(kb, (n, RANK, d))}

  def loss(adapter, state):
    model = nnx.merge(graphdef, state)

    def project(name, x, w, layer, rng):  # LoRA on q and o (both [hidden, hidden] here)
      y = model.matmul(x, w)
      if name in ("q", "o"):
        y = y + model.matmul(model.matmul(x, layer["a"]), layer["b"])
      return y

    logits, _ = model(tokens, positions=positions, attention_mask=mask, adapter_layers=adapter,
                      project=project)
    return jnp.mean(jax.nn.log_softmax(logits)[..., 5] * mask), logits

  step = jax.value_and_grad(loss, has_aux=True)
  (_, logits), grads = jax.jit(step)(adapter, state)
  return logits, grads, str(jax.make_jaxpr(step)(adapter, state))


def _rel(got, want):
  return float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want))


@pytest.mark.slow
def test_f32_policies_agree_exactly():
  # In f32 no workaround applies (they all concern bf16), so both policies build one program.
  cpu_logits, cpu_grads, _ = _run("cpu", "float32")
  xla_logits, xla_grads, _ = _run("xla", "float32")
  np.testing.assert_array_equal(cpu_logits, xla_logits)
  for key in ("a", "b"):
    np.testing.assert_array_equal(cpu_grads[key], xla_grads[key])


@pytest.mark.slow
def test_bf16_policies_agree_within_bf16_rounding():
  cpu_logits, cpu_grads, cpu_jaxpr = _run("cpu", "bfloat16")
  xla_logits, xla_grads, xla_jaxpr = _run("xla", "bfloat16")
  # The workarounds are really on under "cpu" and gone under "xla".
  assert "u16" in cpu_jaxpr and "optimization_barrier" in cpu_jaxpr
  assert "u16" not in xla_jaxpr and "optimization_barrier" not in xla_jaxpr
  # The uint16 bits, the barrier and the residual dtype change no number; "xla" runs the
  # attention einsums on bf16 inputs where "cpu" uses f32, one bf16 rounding (relative 2^-9)
  # of q, k, v and the probabilities per layer: 0.3 % here (logits and both gradients), under 1 %
  # of the norm; a real wiring difference (a lost adapter path, a wrong transpose) is O(1).
  assert not np.array_equal(cpu_logits, xla_logits)  # the attention dtype does differ
  assert _rel(xla_logits, cpu_logits) < 1e-2
  for key in ("a", "b"):
    assert _rel(xla_grads[key], cpu_grads[key]) < 1e-2


@pytest.mark.slow
def test_a_transposed_copy_of_the_base_changes_no_number():
  plain_logits, plain_grads, plain_jaxpr = _run("cpu", "bfloat16")
  logits, grads, jaxpr = _run("cpu", "bfloat16", transposed=True)
  # The backward pass reads the stored W^T: none of the seven projections materialises one
  # behind a barrier any more (the adapter's own bf16 matmuls still do).
  barriers = lambda text: text.count("optimization_barrier")
  assert barriers(plain_jaxpr) - barriers(jaxpr) == len(PROJECTIONS)
  np.testing.assert_array_equal(logits, plain_logits)
  for key in ("a", "b"):
    np.testing.assert_array_equal(grads[key], plain_grads[key])


def test_the_transposed_copy_is_the_transpose_and_respects_its_budget(monkeypatch):
  config = tiny_config(param_dtype="bfloat16", compute_dtype="bfloat16", backend="cpu")
  model = Llama(config, rngs=nnx.Rngs(0))
  _, state = nnx.split(model)
  pair = backend.frozen_base(state, config, model.weight_table(), transposed=True)
  q = pair["layers"]["q"].get_value()
  assert isinstance(q, backend.FrozenPair)
  want = np.asarray(state["layers"]["q"][...]).view(np.uint16)
  np.testing.assert_array_equal(q.bits, want)
  np.testing.assert_array_equal(q.bits_t, np.swapaxes(want, -1, -2))
  assert pair["layers"]["attn_norm"][...].dtype == jnp.bfloat16  # norms are not projections
  monkeypatch.setattr(backend, "TRANSPOSED_COPY_MAX_BYTES", 0)
  over = backend.frozen_base(state, config, model.weight_table(), transposed=True)
  assert over["layers"]["q"][...].dtype == jnp.uint16  # bits only, no copy


def test_auto_resolves_once_to_cpu_here():
  assert backend.resolve("auto") == "cpu"
  assert tiny_config().backend == "cpu"
  assert tiny_config(backend="xla").replace(remat=True).backend == "xla"
  assert backend.policy("xla") == backend.POLICIES["xla"]


@pytest.mark.parametrize("bad", ["gpu", "CPU", ""])
def test_a_bad_backend_names_the_config_key(bad):
  with pytest.raises(ConfigError, match=r"^model\.backend: unknown backend") as e:
    tiny_config(backend=bad)
  assert "\n" not in str(e.value)
