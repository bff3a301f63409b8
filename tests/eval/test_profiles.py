"""Profiles: item choice, the on-disk cache (reuse, resume, invalidation, atomic writes), released
profiles, over-long prompts; one real SmolLM2 profile (slow)."""

import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers
from flax import nnx
from tokenizers import models as tok_models
from tokenizers import pre_tokenizers

from oppu_jax.data import prompts as prompts_lib
from oppu_jax.data import tasks
from oppu_jax.data.types import LampData, Query, User
from oppu_jax.eval import profiles
from oppu_jax.models import llama
from oppu_jax.models.decoding import Decoding
from oppu_jax.models.tokenizer import Tokenizer
from oppu_jax.pipeline import workdir

TASK = "LaMP_3"
WORDS = "great poor camera battery screen price sound fast slow love hate box ship".split()
SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]
NEW = 6  # new tokens; one value (and batch 2) everywhere, so the tests share compiled programs


def _users(n=5, n_items=14):
  users = []
  for u in range(n):
    history = tuple(
        {"id": f"{u}-{i}", "text": " ".join(WORDS[(u + i + j) % len(WORDS)] for j in range(4)),
         "score": str(1 + (u + i) % 5)} for i in range(n_items))
    users.append(User(f"user{u}", history, (Query(f"q{u}", "x"),)))
  return users


def _render(messages, add_generation_prompt):
  text = "".join(f"<s> {m['role']} {m['content']} </s> " for m in messages)
  return text + ("<s> assistant" if add_generation_prompt else "")


def word_tokenizer(add_bos=False):
  """A word-level tokenizer whose vocabulary covers the test prompts, so a changed word changes
  the prompt ids; `add_bos` as a Llama-2 tokenizer says."""
  pre = pre_tokenizers.Whitespace()
  text = tasks.get_task(TASK).profile_instruction + " " + " ".join(WORDS + ["review", "score"])
  words = sorted({w for w, _ in pre.pre_tokenize_str(text)} | set("0123456789|:."))
  vocab = {w: i for i, w in enumerate(SPECIAL + words)}
  backend = tokenizers.Tokenizer(tok_models.WordLevel(vocab, unk_token="<unk>"))
  backend.pre_tokenizer = pre
  backend.add_special_tokens(SPECIAL[:3])
  return Tokenizer(backend, bos_id=1, eos_id=2, pad_id=0, render_chat=_render, add_bos=add_bos)


@pytest.fixture(scope="module")
def tokenizer():
  return word_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
  return random_model(llama.tiny_config(vocab_size=tokenizer.vocab_size))


def random_model(config, seed=0):
  """A random Llama with weights drawn in numpy (eager JAX init compiles op by op: seconds)."""
  model = nnx.eval_shape(lambda: llama.Llama(config, rngs=nnx.Rngs(0)))
  state = nnx.state(model)
  rng = np.random.default_rng(seed)
  pure = jax.tree_util.tree_map_with_path(
      lambda path, leaf: np.ones(leaf.shape, np.float32) if "norm" in jax.tree_util.keystr(path)
      else (0.02 * rng.standard_normal(leaf.shape)).astype(np.float32),
      nnx.to_pure_dict(state))
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(model, state)
  return model


@pytest.fixture
def calls(monkeypatch):
  """Counts generate() calls and the prompts each was given."""
  seen = []
  real = profiles.generate

  def counting(forward, prompts, *args, **kw):
    seen.append(len(prompts))
    return real(forward, prompts, *args, **kw)

  monkeypatch.setattr(profiles, "generate", counting)
  return seen


def _run(model, tokenizer, users, path, **kw):
  kw.setdefault("decoding", Decoding(max_new_tokens=NEW, batch_size=2))
  return profiles.user_profiles(model, tokenizer, TASK, users, cache_path=str(path), **kw)


def test_item_choice_is_fixed_by_seed_and_user():
  user, other = _users(2, n_items=30)
  chosen = profiles.profile_items(user, 10, seed=0)
  # Pinned: a stable hash, the same in every process (never Python's salted hash()).
  assert chosen == [0, 13, 14, 16, 19, 20, 22, 23, 27, 29]
  assert chosen == sorted(set(chosen))
  assert profiles.profile_items(user, 10, seed=0) == chosen
  assert profiles.profile_items(user, 10, seed=1) != chosen
  assert profiles.profile_items(other, 10, seed=0) != chosen
  assert profiles.profile_items(_users(1, n_items=4)[0], 10, seed=0) == [0, 1, 2, 3]


def test_prompt_is_appendix_j_in_the_chat_template(tokenizer):
  user = _users(1)[0]
  items = [user.history[j] for j in profiles.profile_items(user, 10, seed=0)]
  text = prompts_lib.profile_prompt(TASK, items)
  chat = profiles.profile_prompt_ids(tokenizer, TASK, user)
  assert chat == tokenizer.encode(_render([{"role": "user", "content": text}], True))
  assert profiles.profile_prompt_ids(tokenizer, TASK, user, chat=False) == tokenizer.encode(text)


def test_cache_is_reused_and_a_killed_run_resumes(model, tokenizer, tmp_path, calls, monkeypatch):
  users = _users(4)
  path = tmp_path / "profiles.json"
  first = _run(model, tokenizer, users, path)
  assert set(first) == {u.id for u in users}
  assert calls == [2, 2]
  assert json.loads(path.read_text())["profiles"] == first

  calls.clear()
  assert _run(model, tokenizer, users, path) == first
  assert calls == []

  # Killed during the second batch: the first batch is on disk, and only the rest is generated.
  resumed = tmp_path / "resumed.json"
  counting = profiles.generate

  def dies_second_time(forward, prompts, *args, **kw):
    if len(calls) == 1:
      raise KeyboardInterrupt
    return counting(forward, prompts, *args, **kw)

  monkeypatch.setattr(profiles, "generate", dies_second_time)
  calls.clear()
  with pytest.raises(KeyboardInterrupt):
    _run(model, tokenizer, users, resumed)
  assert len(json.loads(resumed.read_text())["profiles"]) == 2
  monkeypatch.setattr(profiles, "generate", counting)
  calls.clear()
  assert _run(model, tokenizer, users, resumed) == first
  assert calls == [2]


def test_changed_settings_or_history_regenerate(model, tokenizer, tmp_path, calls, caplog):
  users = _users(4)
  path = tmp_path / "profiles.json"
  _run(model, tokenizer, users, path)
  calls.clear()
  with caplog.at_level(logging.INFO, logger=profiles.__name__):
    _run(model, tokenizer, users, path, seed=1)
  assert calls == [2, 2]
  assert "other settings (seed)" in caplog.text
  assert json.loads(path.read_text())["settings"]["seed"] == 1

  # Two users' histories changed: only they are regenerated (num_items=20 shows every item).
  _run(model, tokenizer, users, path, seed=1, num_items=20)
  changed = [User(u.id, (dict(u.history[0], text="hate hate hate hate"),) + u.history[1:],
                  u.queries) for u in users[:2]] + users[2:]
  calls.clear()
  caplog.clear()
  with caplog.at_level(logging.INFO, logger=profiles.__name__):
    _run(model, tokenizer, changed, path, seed=1, num_items=20)
  assert calls == [2]
  assert "2 cached profile(s) were made from another prompt" in caplog.text


def test_other_weights_invalidate_the_cache(model, tokenizer, tmp_path, calls):
  users = _users(2)
  path = tmp_path / "profiles.json"
  _run(model, tokenizer, users, path)
  other = random_model(model.config, seed=1)
  calls.clear()
  _run(other, tokenizer, users, path)
  assert calls == [2]


def test_cache_writes_are_atomic(model, tokenizer, tmp_path, monkeypatch):
  # Through files.output: a temp sibling renamed onto the cache (its failure modes are tested
  # in tests/pipeline/test_workdir.py).
  path = tmp_path / "sub" / "profiles.json"
  replaced = []
  real_replace = os.replace

  def spy(src, dst):
    replaced.append((os.path.dirname(src), dst))
    return real_replace(src, dst)

  monkeypatch.setattr(workdir.os, "replace", spy)
  _run(model, tokenizer, _users(2), path)
  assert replaced == [(str(path.parent), str(path))]
  assert os.listdir(path.parent) == ["profiles.json"]


def test_digest_of_a_bf16_model(model):
  # Issue 11: memoryview cannot cast a bf16 buffer; the digest must still see every weight.
  def bf16_model(seed):
    m = random_model(llama.tiny_config(vocab_size=model.config.vocab_size,
                                       param_dtype="bfloat16"), seed)
    state = nnx.state(m)
    nnx.update(m, jax.tree.map(lambda x: x.astype(jnp.bfloat16), state))
    return m

  a = bf16_model(0)
  assert {str(x.dtype) for x in jax.tree.leaves(nnx.state(a))} == {"bfloat16"}
  digest = profiles.model_digest(a)
  assert digest == profiles.model_digest(bf16_model(0))
  assert digest != profiles.model_digest(bf16_model(1))


def test_unreadable_cache_is_regenerated(model, tokenizer, tmp_path, calls, caplog):
  path = tmp_path / "profiles.json"
  path.write_text("{not json")
  with caplog.at_level(logging.WARNING, logger=profiles.__name__):
    out = _run(model, tokenizer, _users(2), path)
  assert calls == [2] and "unreadable profile cache" in caplog.text
  assert json.loads(path.read_text())["profiles"] == out


def test_release_profiles_bypass_generation(model, tokenizer, tmp_path, monkeypatch, caplog):
  users = _users(2)
  data = LampData(TASK, tuple(users), {"user0": " harsh rater \n", "user1": "  "})
  with caplog.at_level(logging.WARNING, logger=profiles.__name__):
    given = profiles.profiles_from_release(data)
  assert given == {"user0": "harsh rater"}
  assert "1 released profile(s) are empty" in caplog.text

  data = LampData(TASK, tuple(users), {"user0": "harsh", "user1": "kind"})
  monkeypatch.setattr(profiles, "generate", lambda *a, **kw: pytest.fail("generated"))
  path = tmp_path / "profiles.json"
  out = _run(model, tokenizer, users, path, given=profiles.profiles_from_release(data))
  assert out == {"user0": "harsh", "user1": "kind"}
  assert not path.exists()


def test_overlong_prompt_is_cut_to_the_largest_bucket(model, tokenizer, tmp_path, caplog):
  users = _users(2, n_items=30)
  full = profiles.profile_prompt_ids(tokenizer, TASK, users[0], num_items=30)
  assert len(full) > 256
  with caplog.at_level(logging.WARNING, logger=profiles.__name__):
    cut = profiles.profile_prompt_ids(tokenizer, TASK, users[0], num_items=30, max_tokens=256)
    out = _run(model, tokenizer, users, tmp_path / "p.json", num_items=30,
               decoding=Decoding(max_new_tokens=NEW, batch_size=2, prompt_buckets=(64, 256)))
  assert len(cut) == 256 and "cut to 256" in caplog.text
  # The instruction and the chat ending survive; the history loses its end.
  ending = tokenizer.encode("Answer: </s> <s> assistant")
  assert cut[:40] == full[:40] and cut[-len(ending):] == ending
  assert set(out) == {u.id for u in users}
  # Smaller than the instruction itself: both ends kept, still no error.
  tiny = profiles.profile_prompt_ids(tokenizer, TASK, users[0], max_tokens=20)
  assert tiny == full[:10] + full[-10:]


def test_prompt_starts_with_bos_once_where_the_model_expects_it():
  tok, user = word_tokenizer(add_bos=True), _users(1, n_items=30)[0]
  text = prompts_lib.profile_prompt(TASK, [user.history[j] for j in profiles.profile_items(user, 10, 0)])
  # The chat template writes <s> (the BOS) first itself: no second one.
  chat = profiles.profile_prompt_ids(tok, TASK, user)
  assert chat == tok.encode(_render([{"role": "user", "content": text}], True))
  assert chat[:2] != [1, 1]
  assert profiles.profile_prompt_ids(tok, TASK, user, chat=False) == [1, *tok.encode(text)]
  for chat in (True, False):
    for max_tokens in (256, 20):  # the history cut, and the both-ends cut
      ids = profiles.profile_prompt_ids(tok, TASK, user, num_items=30, chat=chat,
                                        max_tokens=max_tokens)
      assert len(ids) == max_tokens and ids[0] == 1 and ids[1] != 1


def test_profiles_are_decoded_greedily(model, tokenizer, tmp_path, calls):
  # The cache fingerprints no sampling or beam settings, so it takes none.
  with pytest.raises(ValueError, match="greedily"):
    _run(model, tokenizer, _users(2), tmp_path / "p.json",
         decoding=Decoding(max_new_tokens=NEW, method="beam"))
  assert calls == []


def test_user_without_history_gets_an_empty_profile(model, tokenizer, tmp_path, calls):
  out = _run(model, tokenizer, [User("empty", (), ())], tmp_path / "p.json")
  assert out == {"empty": ""} and calls == []


@pytest.mark.real_weights
@pytest.mark.slow
def test_smollm2_writes_a_profile(smollm2, tmp_path):
  from oppu_jax.data import synth

  model, _ = smollm2
  tok = Tokenizer.from_gguf()
  user = synth.synthesize(TASK, num_users=1, seed=0, history_min=12, history_max=12,
                          text_words=(10, 15)).users[0]
  start = time.perf_counter()
  out = profiles.user_profiles(model, tok, TASK, [user], cache_path=str(tmp_path / "p.json"),
                               decoding=Decoding(max_new_tokens=32, batch_size=1))
  print(f"SmolLM2 profile in {time.perf_counter() - start:.1f} s: {out[user.id]!r}")
  assert out[user.id].strip()
