"""compile_check.analysis: FLOPs counted through loops, collectives read from HLO text."""

import jax
import jax.numpy as jnp

from oppu_jax.compile_check import analysis

S = jax.ShapeDtypeStruct


def _flops(fn, *args, trips=0):
  return analysis.count_flops(jax.jit(fn).trace(*args).jaxpr.jaxpr, trips)


def test_a_scan_body_counts_once_per_step_where_xla_counts_it_once():
  step = lambda c, w: (c @ w, None)
  fn = lambda x, ws: jax.lax.scan(step, x, ws)[0]
  args = S((8, 16), jnp.float32), S((5, 16, 16), jnp.float32)
  assert _flops(fn, *args) == 5 * 2 * 8 * 16 * 16
  # XLA's own cost analysis sees the body once: the reason count_flops exists.
  xla = jax.jit(fn).trace(*args).lower().compile().cost_analysis()["flops"]
  assert xla < 2 * (2 * 8 * 16 * 16)


def test_batched_dots_grads_while_and_cond():
  bmm = lambda a, b: jnp.einsum("bij,bjk->bik", a, b)
  assert _flops(bmm, S((3, 4, 5), jnp.float32), S((3, 5, 6), jnp.float32)) == 2 * 3 * 4 * 5 * 6
  # d/dw sum(x @ w): the forward dot and one for the weight gradient (x^T @ ones)
  grad = jax.grad(lambda w, x: jnp.sum(x @ w))
  assert _flops(grad, S((5, 6), jnp.float32), S((4, 5), jnp.float32)) == 2 * (2 * 4 * 5 * 6)
  loop = lambda x, w: jax.lax.while_loop(lambda c: c[1] < 3, lambda c: (c[0] @ w, c[1] + 1),
                                         (x, 0))[0]
  assert _flops(loop, S((4, 4), jnp.float32), S((4, 4), jnp.float32), trips=7) == 7 * 2 * 64
  branch = lambda p, x: jax.lax.cond(p, lambda x: x @ x @ x, lambda x: x @ x, x)
  assert _flops(branch, S((), jnp.bool_), S((4, 4), jnp.float32)) == 2 * (2 * 64)


def test_collectives_reads_sync_and_async_ops_with_their_result_bytes():
  hlo = "\n".join([
      "  %all-reduce.1 = f32[4096,1024]{1,0} all-reduce(f32[4096,1024]{1,0} %dot), channel_id=1",
      "  %ag = (bf16[8,128]{1,0}, bf16[32,128]{1,0}) all-gather-start(bf16[8,128]{1,0} %p)",
      "  %agd = bf16[32,128]{1,0} all-gather-done((bf16[8,128], bf16[32,128]) %ag)",
      "  %cp = u32[2]{0} collective-permute(u32[2]{0} %k), source_target_pairs={{0,1}}",
      "  %add = f32[8]{0} add(f32[8]{0} %a, f32[8]{0} %b)",
  ])
  found = analysis.collectives(hlo)
  assert found == {"all-reduce": (1, 4096 * 1024 * 4), "all-gather": (1, 32 * 128 * 2),
                   "collective-permute": (1, 8)}
  assert analysis.collectives_text(found).startswith("all-gather x1 (8.0 KiB)")
  assert analysis.collectives_text({}) == "none"


def test_analyse_reports_memory_and_flops_of_a_compiled_program():
  fn = jax.jit(lambda a, b: a @ b)
  cost = analysis.analyse(fn.trace(S((64, 32), jnp.float32), S((32, 16), jnp.float32)), 0)
  assert cost.arguments == (64 * 32 + 32 * 16) * 4
  assert cost.outputs == 64 * 16 * 4
  assert cost.flops == 2 * 64 * 32 * 16
  assert cost.fits(cost.bytes_per_device) and not cost.fits(cost.bytes_per_device - 1)
  assert not cost.refused
