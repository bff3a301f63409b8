"""Evaluation on a mesh: a batch's rows split over the users axis and the base over the model
axis (2 x 2 virtual CPU devices, in a subprocess) scores and decodes every row as on one device,
each row under its own user's adapter; the plain model's generation (PAG profiles) likewise."""

import os
import textwrap

import pytest

from virtual_devices import run_script

_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, jax
    sys.path.insert(0, {tests!r})
    import eval_fixtures as ef
    from oppu_jax.eval.decode import generate_for_rows
    from oppu_jax.eval.score import score_choices
    from oppu_jax.models import generate as gen
    from oppu_jax.models.decoding import Decoding
    from oppu_jax.sharding import mesh as mesh_lib
    assert jax.device_count() == 4, jax.device_count()
    model = ef.tiny_model(scale=0.15)  # peaked: argmax not decided by float noise
    rng = np.random.default_rng(0)
    rows = [(int(rng.integers(ef.N_USERS)), list(rng.integers(3, 120, size=int(rng.integers(2, 12)))))
            for _ in range(11)]
    mesh = mesh_lib.make_mesh(users=2, model=2)
    for name in ("lora", "ia3"):
      adapters = ef.stacked_adapters(model, ef.METHODS[name])
      one = score_choices(model, adapters, rows, [[7, 2], [9], [11, 12, 2]], batch_size=4)
      split = score_choices(model, adapters, rows, [[7, 2], [9], [11, 12, 2]], batch_size=4,
                            mesh=mesh)
      np.testing.assert_allclose(split, one, rtol=1e-5, atol=1e-5)
      for kw in (dict(method="greedy"), dict(method="beam", num_beams=2)):
        d = Decoding(max_new_tokens=6, batch_size=4, prompt_buckets=(16,), **kw)
        a = generate_for_rows(model, adapters, rows, d, eos_id=-1, pad_id=0)
        b = generate_for_rows(model, adapters, rows, d, eos_id=-1, pad_id=0, mesh=mesh)
        assert a == b, (name, d.method, a, b)
        assert len(set(map(tuple, a))) > 3  # the rows decode differently: not a degenerate check
    prompts = [p for _, p in rows]
    d = Decoding(max_new_tokens=6, batch_size=4, prompt_buckets=(16,))
    kw = dict(init_cache=model.init_cache, eos_id=-1, pad_id=0)
    plain = gen.generate(gen.make_forward(model), prompts, d, **kw)
    split = gen.generate(
        gen.make_forward(model, lambda s: mesh_lib.shard_base(s, mesh, model.weight_table())),
        prompts, d, place=mesh_lib.rows_placer(mesh), **kw)
    assert plain == split and len(set(map(tuple, plain))) > 3, (plain, split)
    print("SHARDED-EVAL-OK")
""")


@pytest.mark.slow
@pytest.mark.multiprocess
def test_scoring_and_decoding_on_a_2x2_mesh_equal_one_device(tmp_path):
  run_script(tmp_path / "sharded_eval.py", _SCRIPT.format(tests=os.path.dirname(__file__)),
             devices=4, done="SHARDED-EVAL-OK")
