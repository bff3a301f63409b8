"""The matmul dtype policy: bf16 forward and backward with f32 accumulation, frozen bf16 bits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from oppu_jax.models import backend, layers
from oppu_jax.models.llama import Llama, tiny_config, weight_table


def _xw(seed=0, shape=(3, 5, 48), d_out=40):
  kx, kw = jax.random.split(jax.random.PRNGKey(seed))
  x = jax.random.normal(kx, shape, jnp.float32)
  w = jax.random.normal(kw, (shape[-1], d_out), jnp.float32) / 7
  return x, w


def _grads(x, w, compute_dtype, cotangent):
  loss = lambda x, w: jnp.sum(layers.matmul(x, w, compute_dtype) * cotangent)
  return jax.grad(loss, argnums=(0, 1), allow_int=True)(x, w)


def test_bf16_forward_is_bf16_inputs_with_f32_accumulation():
  x, w = _xw()
  got = layers.matmul(x, w, jnp.bfloat16)
  want = jnp.matmul(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16),
                    preferred_element_type=jnp.float32)
  assert got.dtype == jnp.float32
  np.testing.assert_array_equal(got, want)


def test_bf16_backward_rounds_the_cotangent_and_accumulates_in_f32():
  x, w = _xw()
  g = jax.random.normal(jax.random.PRNGKey(3), (3, 5, 40))
  dx, dw = _grads(x, w, jnp.bfloat16, g)
  xb, wb, gb = (a.astype(jnp.bfloat16).astype(jnp.float32) for a in (x, w, g))
  hi = jax.lax.Precision.HIGHEST
  np.testing.assert_allclose(dx, jnp.matmul(gb, wb.T, precision=hi), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dw, jnp.einsum("bti,bto->io", xb, gb, precision=hi),
                             rtol=1e-5, atol=1e-4)
  assert dx.dtype == x.dtype and dw.dtype == w.dtype


def test_bf16_gradients_stay_close_to_f32():
  x, w = _xw(1)
  g = jax.random.normal(jax.random.PRNGKey(4), (3, 5, 40))
  for got, want in zip(_grads(x, w, jnp.bfloat16, g), _grads(x, w, jnp.float32, g)):
    rel = jnp.linalg.norm(got - want) / jnp.linalg.norm(want)
    assert 0 < rel < 1e-2  # bf16 rounding is there, and small


def test_frozen_bits_give_the_bf16_result_and_no_weight_gradient():
  x, w = _xw(2)
  w16 = w.astype(jnp.bfloat16)
  bits = backend.frozen_bits(w16)
  assert bits.dtype == jnp.uint16
  np.testing.assert_array_equal(layers.matmul(x, bits), layers.matmul(x, w16, jnp.bfloat16))
  g = jax.random.normal(jax.random.PRNGKey(5), (3, 5, 40))
  dx_bits, dw_bits = _grads(x, bits, jnp.bfloat16, g)
  dx, _ = _grads(x, w16, jnp.bfloat16, g)
  np.testing.assert_array_equal(dx_bits, dx)
  assert dw_bits.dtype == jax.dtypes.float0
  # f32 weights are not reinterpreted.
  assert backend.frozen_bits(w) is w


def test_frozen_bits_view_shares_the_buffer():
  w16 = _xw()[1].astype(jnp.bfloat16)
  view = backend.frozen_bits_view(w16)
  assert view.dtype == jnp.uint16
  assert view.unsafe_buffer_pointer() == w16.unsafe_buffer_pointer()
  np.testing.assert_array_equal(view, backend.frozen_bits(w16))


@pytest.mark.slow
@pytest.mark.parametrize("param_dtype", ["bfloat16", "float32"])
def test_model_reads_state_with_frozen_bits_unchanged(param_dtype):
  config = tiny_config(param_dtype=param_dtype, compute_dtype="bfloat16")
  graphdef, state = nnx.split(Llama(config, rngs=nnx.Rngs(0)))
  tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 7), 3, config.vocab_size)
  positions = jnp.broadcast_to(jnp.arange(7), (2, 7))
  mask = jnp.ones((2, 7), bool)
  run = lambda s: nnx.merge(graphdef, s)(tokens, positions=positions, attention_mask=mask)[0]
  bits_state = backend.frozen_base(state, config, weight_table(config))
  leaf = bits_state["layers"]["q"][...]
  assert leaf.dtype == (jnp.uint16 if param_dtype == "bfloat16" else jnp.float32)
  np.testing.assert_array_equal(run(bits_state), run(state))
