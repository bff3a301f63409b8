"""Label scoring on an encoder-decoder: each row under its own user's adapter, equal to
transformers' T5 (bare) and to one forward per row and choice (adapted)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import tiny_t5  # noqa: E402
from oppu_jax.eval import score  # noqa: E402
from oppu_jax.models import load  # noqa: E402
from oppu_jax.models import adapted  # noqa: E402
from oppu_jax.peft.lora import Lora  # noqa: E402
from oppu_jax.peft.prompt_tuning import PromptTuning  # noqa: E402
from oppu_jax.peft.stack import UserAdapters  # noqa: E402

ROWS = [(0, [5, 6, 7, 8, 1]), (1, [9, 10, 1]), (1, [11, 12, 13, 14, 15, 16, 1]), (0, [17, 1])]
CHOICES = [[20, 1], [21, 22, 1], [23, 24, 25, 1]]


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
  return tiny_t5.save_t5(tmp_path_factory.mktemp("flan"), "flan")


@pytest.mark.torch
def test_bare_scores_equal_transformers(t5_dir):
  model, _ = load.load_model(t5_dir)
  hf = transformers.T5ForConditionalGeneration.from_pretrained(t5_dir).eval()
  ours = score.score_choices(model, None, ROWS, CHOICES, batch_size=2)
  for r, (_, source) in enumerate(ROWS):
    for c, choice in enumerate(CHOICES):
      with torch.no_grad():
        logits = hf(input_ids=torch.tensor([source]),
                    decoder_input_ids=torch.tensor([[0] + choice[:-1]])).logits[0]
      logp = torch.log_softmax(logits, -1)[torch.arange(len(choice)), torch.tensor(choice)]
      assert ours[r, c] == pytest.approx(float(logp.sum()), abs=1e-4)


@pytest.mark.parametrize("method", [Lora(targets=("enc.q", "enc.v", "dec.q", "cross.v"),
                                         rank=2, alpha=4.0),
                                    PromptTuning(num_virtual_tokens=2)])
@pytest.mark.slow
def test_each_row_is_scored_under_its_own_users_adapter(t5_dir, method):
  model, _ = load.load_model(t5_dir)
  table = model.weight_table()
  users = []
  for seed in (1, 2):
    adapter = method.init(table, jax.random.PRNGKey(seed), model.embed[...])
    leaves, tree = jax.tree.flatten(adapter)
    keys = jax.random.split(jax.random.PRNGKey(10 + seed), len(leaves))
    users.append(jax.tree.unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape)
                                           for x, k in zip(leaves, keys)]))
  stacked = UserAdapters.stack(method, users)
  ours = score.score_choices(model, stacked, ROWS, CHOICES, batch_size=4)
  for r, (user, source) in enumerate(ROWS):
    for c, choice in enumerate(CHOICES):
      dec = jnp.asarray([[0] + choice[:-1]])
      logits = adapted.forward(model, method, users[user], dec, jnp.arange(len(choice))[None],
                             jnp.ones_like(dec, bool),
                             encoder={"tokens": jnp.asarray([source]),
                                      "attention_mask": jnp.ones((1, len(source)), bool)})[0]
      logp = jax.nn.log_softmax(logits, -1)[jnp.arange(len(choice)), jnp.asarray(choice)]
      assert ours[r, c] == pytest.approx(float(logp.sum()), abs=1e-4)
  # The two users' adapters really differ on the same row.
  swapped = score.score_choices(model, stacked, [(1 - u, s) for u, s in ROWS], CHOICES)
  assert np.abs(swapped - ours).max() > 1e-3
