"""Generation: KV-cache decoding against full recompute, sampling filters, compile counts, and
greedy / beam output against transformers' `generate` (tiny random model and SmolLM2)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oppu_jax.models import generate as gen
from oppu_jax.models import llama, load
from oppu_jax.models.decoding import DEFAULT_BUCKETS, Decoding

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# Different lengths, so the batch is left-padded.
PROMPTS = [[5, 17, 33, 91], [44, 9, 71, 3, 100, 12, 7, 60, 61], [8], [20, 21, 22, 23, 24, 25]]
N = 10  # new tokens; one value (and batch 4, bucket 32) everywhere, so tests share programs
GREEDY = Decoding(max_new_tokens=N, batch_size=4)


@pytest.fixture(scope="module")
def tiny_pair():
  """(our model, transformers' model) with the same random weights; a wide init gives peaked
  distributions, so greedy and beam choices are not decided by float noise."""
  cfg = llama.tiny_config()
  hf_cfg = transformers.LlamaConfig(
      vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
      intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
      num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
      rope_theta=cfg.rope_theta, rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=False,
      initializer_range=0.15, bos_token_id=1, eos_token_id=2, pad_token_id=0,
  )
  torch.manual_seed(0)
  hf = transformers.LlamaForCausalLM(hf_cfg).eval()
  ours = load.from_hf_state_dict(cfg, {k: v.numpy() for k, v in hf.state_dict().items()})
  return ours, hf


def _recompute_greedy(model, prompt, steps):
  """Greedy without a cache: the whole sequence is run again for every new token (right-padded
  to one length, which causal attention ignores, so it compiles once)."""
  length = 32
  run = jax.jit(lambda toks, mask: model(toks, positions=jnp.arange(length)[None],
                                         attention_mask=mask)[0][0])
  seq, logprobs = list(prompt), []
  for _ in range(steps):
    t = len(seq)
    toks = jnp.asarray([seq + [0] * (length - t)])
    logp = jax.nn.log_softmax(run(toks, jnp.arange(length)[None] < t)[t - 1])
    tok = int(jnp.argmax(logp))
    seq.append(tok)
    logprobs.append(float(logp[tok]))
  return seq[len(prompt):], logprobs


def _hf_generate(hf, prompt, max_new, eos_id, pad_id, **kw):
  with torch.no_grad():
    out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=int),
                      max_new_tokens=max_new, eos_token_id=eos_id, pad_token_id=pad_id, **kw)
  ids = out[0, len(prompt):].tolist()
  return ids[:ids.index(eos_id)] if eos_id in ids else ids


@pytest.mark.slow
def test_kv_cache_decoding_equals_full_recompute(tiny_pair):
  model, _ = tiny_pair
  got, got_lp = gen.generate(
      gen.make_forward(model), PROMPTS, GREEDY, init_cache=model.init_cache, eos_id=-1, pad_id=0,
      return_logprobs=True,
  )
  for prompt, ids, lps in zip(PROMPTS, got, got_lp):
    want, want_lp = _recompute_greedy(model, prompt, N)
    assert ids == want
    np.testing.assert_allclose(lps, want_lp, atol=2e-5)


def test_stops_at_eos_and_pads_finished_rows(tiny_pair):
  model, _ = tiny_pair
  fwd = gen.make_forward(model)
  free = gen.generate(fwd, PROMPTS, GREEDY, init_cache=model.init_cache, eos_id=-1, pad_id=0)
  eos = free[0][3]  # a token prompt 0 emits at step 3: make it the EOS
  cut = gen.generate(fwd, PROMPTS, GREEDY, init_cache=model.init_cache, eos_id=eos, pad_id=0)
  for a, b in zip(free, cut):
    assert b == (a[:a.index(eos)] if eos in a else a)
  assert cut[0] == free[0][:free[0].index(eos)]


def test_greedy_and_beam_match_transformers_on_tiny_model(tiny_pair):
  ours, hf = tiny_pair
  fwd = gen.make_forward(ours)
  eos = 2
  greedy = gen.generate(fwd, PROMPTS, GREEDY, init_cache=ours.init_cache, eos_id=eos, pad_id=0)
  beam = gen.generate(fwd, PROMPTS, dataclasses.replace(GREEDY, method="beam", num_beams=4),
                      init_cache=ours.init_cache, eos_id=eos, pad_id=0)
  for prompt, g, b in zip(PROMPTS, greedy, beam):
    assert g == _hf_generate(hf, prompt, N, eos, 0, do_sample=False)
    assert b == _hf_generate(hf, prompt, N, eos, 0, do_sample=False, num_beams=4,
                             length_penalty=1.0, early_stopping=False)


def test_beam_with_eos_hits_matches_transformers(tiny_pair):
  """An EOS that the beams actually emit, so finished hypotheses get filed and compared."""
  ours, hf = tiny_pair
  fwd = gen.make_forward(ours)
  beam = dataclasses.replace(GREEDY, method="beam")
  free = gen.generate(fwd, PROMPTS, beam, init_cache=ours.init_cache, eos_id=-1, pad_id=0)
  eos = free[1][4]
  beam = gen.generate(fwd, PROMPTS, dataclasses.replace(beam, length_penalty=0.5),
                      init_cache=ours.init_cache, eos_id=eos, pad_id=0)
  assert len(beam[1]) < N
  for prompt, b in zip(PROMPTS, beam):
    assert b == _hf_generate(hf, prompt, N, eos, 0, do_sample=False, num_beams=4,
                             length_penalty=0.5, early_stopping=False)


def test_one_beam_is_greedy(tiny_pair):
  model, _ = tiny_pair
  fwd = gen.make_forward(model)
  kw = dict(init_cache=model.init_cache, eos_id=2, pad_id=0)
  one_beam = dataclasses.replace(GREEDY, method="beam", num_beams=1)
  assert gen.generate(fwd, PROMPTS, one_beam, **kw) == gen.generate(fwd, PROMPTS, GREEDY, **kw)


@pytest.mark.slow
def test_sampling_is_seeded_and_independent_of_batching(tiny_pair):
  model, _ = tiny_pair
  fwd = gen.make_forward(model)
  kw = dict(init_cache=model.init_cache, eos_id=-1, pad_id=0)
  sample = dataclasses.replace(GREEDY, method="sample", temperature=1.0, top_k=20, top_p=0.95,
                               seed=3)
  a = gen.generate(fwd, PROMPTS, sample, **kw)
  assert a == gen.generate(fwd, PROMPTS, sample, **kw)
  # One program more.
  assert a == gen.generate(fwd, PROMPTS, dataclasses.replace(sample, batch_size=2), **kw)
  assert a != gen.generate(fwd, PROMPTS, dataclasses.replace(sample, seed=4), **kw)
  top1 = gen.generate(fwd, PROMPTS, dataclasses.replace(sample, top_k=1), **kw)
  assert top1 == gen.generate(fwd, PROMPTS, dataclasses.replace(sample, method="greedy"), **kw)


@pytest.mark.slow
def test_top_k_and_top_p_filters():
  logits = jnp.log(jnp.array([0.05, 0.4, 0.3, 0.15, 0.1]))
  keys = jax.random.split(jax.random.key(0), 2000)

  def draws(top_k, top_p, temperature=1.0):
    one = lambda k: gen._sample_one(k, logits, temperature, top_k, top_p)
    return np.asarray(jax.vmap(one)(keys))

  assert set(draws(2, 1.0)) == {1, 2}
  assert set(draws(0, 0.6)) == {1, 2}  # 0.4 < 0.6, 0.4 + 0.3 reaches it
  assert set(draws(0, 0.35)) == {1}
  assert set(draws(3, 0.8)) == {1, 2}  # top-3 renormalised: .47, .35, .18
  assert set(draws(3, 0.85)) == {1, 2, 3}
  assert set(draws(0, 1.0)) == {0, 1, 2, 3, 4}
  frac = np.mean(draws(0, 1.0) == 1)
  assert abs(frac - 0.4) < 0.05
  assert np.mean(draws(0, 1.0, temperature=0.1) == 1) > 0.9


def test_prompts_in_one_bucket_compile_once(tiny_pair):
  model, _ = tiny_pair
  fwd = gen.make_forward(model)
  d = Decoding(max_new_tokens=N, batch_size=2, prompt_buckets=(16, 32))
  kw = dict(init_cache=model.init_cache, eos_id=2, pad_id=0)
  gen.generate(fwd, [[3] * 20, [4] * 25], d, **kw)  # bucket 32
  before = gen._sample_loop._cache_size()
  for lengths in ([1, 2], [9, 16], [17, 32], [5, 31]):
    gen.generate(fwd, [[7] * n for n in lengths], d, **kw)
  # One new program, for bucket 16; bucket 32 was compiled before; a fresh make_forward shares it.
  gen.generate(gen.make_forward(model), [[3] * 20, [4] * 25], d, **kw)
  assert gen._sample_loop._cache_size() - before == 1


def test_plain_closure_forward_and_keep_order(tiny_pair):
  """A forward that is an ordinary closure returning logits at every position [B, T, V]."""
  model, _ = tiny_pair

  def forward(tokens, positions, mask, cache, index):
    return model(tokens, positions=positions, attention_mask=mask, cache=cache, cache_index=index)

  kw = dict(init_cache=model.init_cache, eos_id=2, pad_id=0)
  assert gen.generate(forward, PROMPTS, GREEDY, keep_order=True, **kw) == gen.generate(
      gen.make_forward(model), PROMPTS, GREEDY, **kw)


def test_bad_arguments(tiny_pair):
  model, _ = tiny_pair
  fwd = gen.make_forward(model)
  d = Decoding(max_new_tokens=4)
  kw = dict(init_cache=model.init_cache, eos_id=2, pad_id=0)
  with pytest.raises(ValueError, match="largest bucket"):
    gen.generate(fwd, [[1] * 40], dataclasses.replace(d, prompt_buckets=(16, 32)), **kw)
  with pytest.raises(ValueError, match="at least one token"):
    gen.generate(fwd, [[]], d, **kw)
  with pytest.raises(ValueError, match="return_logprobs"):
    gen.generate(fwd, [[1]], dataclasses.replace(d, method="beam"), return_logprobs=True, **kw)


@pytest.mark.parametrize("settings, match", [
    (dict(method="nucleus"), "method"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(method="sample", temperature=0.0), "temperature"),
    (dict(top_k=-1), "top_k"),
    (dict(top_p=0.0), "top_p"),
    (dict(method="beam", num_beams=0), "num_beams"),
])
def test_bad_decoding_settings(settings, match):
  with pytest.raises(ValueError, match=match):
    Decoding(**dict(dict(max_new_tokens=4), **settings))


def test_decoding_from_run_config():
  from oppu_jax import config as config_lib

  e = config_lib.get_config().eval
  d = Decoding.from_config(e, seed=7)
  assert d == Decoding(method=e.decoding, max_new_tokens=e.max_new_tokens,
                           temperature=e.temperature, top_k=e.top_k, top_p=e.top_p,
                           num_beams=e.num_beams, seed=7, batch_size=e.batch_size)
  # Defaults where the config says nothing; a list of buckets becomes a (hashable) tuple.
  assert (d.length_penalty, d.prompt_buckets) == (1.0, DEFAULT_BUCKETS)
  assert Decoding(max_new_tokens=4, prompt_buckets=[16, 32]).prompt_buckets == (16, 32)


@pytest.mark.slow
def test_smollm2_greedy_matches_transformers(smollm2, smollm2_hf):
  from oppu_jax.models.tokenizer import Tokenizer

  model, config = smollm2
  tok = Tokenizer.from_gguf()
  questions = ["What is the capital of France?", "Write a haiku about the sea.",
               "Rate this review from 1 to 5: 'Great blender, but loud.'"]
  prompts = [tok.encode(tok.apply_chat_template([{"role": "user", "content": q}]))
             for q in questions]
  got = gen.generate(gen.make_forward(model), prompts,
                     Decoding(max_new_tokens=24, batch_size=4), init_cache=model.init_cache,
                     eos_id=tok.eos_id, pad_id=tok.pad_id)
  for prompt, ids in zip(prompts, got):
    assert ids == _hf_generate(smollm2_hf, prompt, 24, tok.eos_id, tok.pad_id, do_sample=False)
