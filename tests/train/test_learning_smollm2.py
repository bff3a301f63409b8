"""Training really learns on the embedded SmolLM2: each user answers every question with its own
word; after training, each user's adapter prefers that user's word on unseen questions — for
LoRA, (IA)³ and prompt tuning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oppu_jax.data.batching import encode_pair
from oppu_jax.models.tokenizer import Tokenizer
from oppu_jax.models import adapted
from oppu_jax.peft import ia3, lora, prompt_tuning
from oppu_jax.train import multi_user
from oppu_jax.train import user_batches as ub

QUESTIONS = [
    "What should I read next?", "Pick a word for today.", "Name something you like.",
    "What is on your mind?", "Say one word.", "Which one would you choose?",
    "What do you recommend?", "Tell me your answer.", "Give me a single word.",
    "What comes first?", "What is the best choice?", "Reply with one word.",
]
HELD_OUT = ["What would you pick now?", "Answer in one word, please.", "What is your choice?"]
USER_WORDS = {"alice": " river", "bob": " yellow"}


@pytest.fixture(scope="module")
def tokenizer():
  return Tokenizer.from_gguf()


def _plans(tokenizer):
  plans = []
  for user, word in USER_WORDS.items():
    examples = [encode_pair(f"Question: {q}\nAnswer:", word, tokenizer.encode,
                            eos_id=tokenizer.eos_id) for q in QUESTIONS[:8]]
    plans.append(ub.plan_user(user, examples, batch_size=4, epochs=4, seq_buckets=(32,),
                              target_buckets=(4,)))
  return plans


def _answer_logprob(model, peft, adapter, tokenizer, question, word):
  prompt = tokenizer.encode(f"Question: {question}\nAnswer:")
  answer = tokenizer.encode(word)
  tokens = jnp.asarray([prompt + answer])
  n = tokens.shape[1]
  logits = adapted.forward(model, peft, adapter, tokens, jnp.arange(n)[None],
                         jnp.ones((1, n), bool))
  logp = jax.nn.log_softmax(logits[0, len(prompt) - 1:n - 1])
  return float(sum(logp[i, t] for i, t in enumerate(answer)))


@pytest.mark.slow
@pytest.mark.parametrize("peft,lr", [
    (lora.Lora(rank=8, alpha=8), 1e-2),
    (ia3.IA3(), 1e-1),
    (prompt_tuning.PromptTuning(8), 1e-1),
], ids=["lora", "ia3", "prompt_tuning"])
@pytest.mark.slow
@pytest.mark.real_weights
def test_each_user_learns_its_own_word(smollm2, tokenizer, peft, lr):
  model, _ = smollm2
  results = multi_user.train_users(
      model, peft, _plans(tokenizer), multi_user.TrainConfig(learning_rate=lr, slots=2))
  for user, word in USER_WORDS.items():
    r = results[user]
    assert np.mean(r.losses[-2:]) < 0.5 * np.mean(r.losses[:2]), (user, r.losses)
    adapter = jax.tree.map(jnp.asarray, r.adapter)
    other = [w for u, w in USER_WORDS.items() if u != user][0]
    for q in HELD_OUT:
      mine = _answer_logprob(model, peft, adapter, tokenizer, q, word)
      theirs = _answer_logprob(model, peft, adapter, tokenizer, q, other)
      assert mine > theirs, (user, q, mine, theirs)
