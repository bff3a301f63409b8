"""Every PEFT method on T5, exported in the HF PEFT format and loaded with `PeftModel.from_pretrained`
on transformers' T5: equal logits. And the files read back."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft_lib = pytest.importorskip("peft")

import tiny_t5  # noqa: E402
from oppu_jax.models import load  # noqa: E402
from oppu_jax.models import adapted
from oppu_jax.peft import hf_format, method as method_lib  # noqa: E402
from oppu_jax.peft.ia3 import IA3  # noqa: E402
from oppu_jax.peft.lora import Lora  # noqa: E402
from oppu_jax.peft.prompt_tuning import PromptTuning  # noqa: E402

SOURCE = np.array([[5, 6, 7, 8, 9, 10, 11, 1], [12, 13, 14, 1, 0, 0, 0, 0]])
SOURCE_MASK = np.arange(8)[None] < np.array([[8], [4]])
TARGET = np.array([[0, 20, 21, 22, 23], [0, 30, 31, 0, 0]])
TARGET_MASK = np.arange(5)[None] < np.array([[5], [3]])


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
  return tiny_t5.save_t5(tmp_path_factory.mktemp("flan"), "flan")


def _randomized(adapter, seed):
  """Every leaf moved off its init (LoRA's B is zero, (IA)³'s vectors one: a no-op otherwise)."""
  leaves, tree = jax.tree.flatten(adapter)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape)
                                   for x, k in zip(leaves, keys)])


def _ours(model, method, adapter):
  positions = jnp.broadcast_to(jnp.arange(TARGET.shape[1]), TARGET.shape)
  return np.asarray(adapted.forward(
      model, method, adapter, jnp.asarray(TARGET), positions, jnp.asarray(TARGET_MASK),
      encoder={"tokens": jnp.asarray(SOURCE), "attention_mask": jnp.asarray(SOURCE_MASK)}))


def _peft(t5_dir, adapter_dir):
  hf = transformers.T5ForConditionalGeneration.from_pretrained(t5_dir).eval()
  model = peft_lib.PeftModel.from_pretrained(hf, adapter_dir).eval()
  with torch.no_grad():
    return model(input_ids=torch.tensor(SOURCE),
                 attention_mask=torch.tensor(SOURCE_MASK.astype(int)),
                 decoder_input_ids=torch.tensor(TARGET),
                 decoder_attention_mask=torch.tensor(TARGET_MASK.astype(int))).logits.numpy()


def _rel(ours, ref):
  return float(np.abs(ours - ref)[TARGET_MASK].max() / np.abs(ref[TARGET_MASK]).max())


CASES = {
    # The study's setting: q, k, v of every attention (encoder, decoder, cross), alpha 32.
    "lora_qkv": lambda table: Lora(targets=table.check_projections(("q", "k", "v")), rank=8,
                                   alpha=32.0, dropout=0.1),
    # Single named projections of each stack: exported as a regex of module names.
    "lora_named": lambda table: Lora(targets=("enc.q", "dec.o", "cross.v", "dec.down"), rank=4,
                                     alpha=8.0),
    "ia3": lambda table: IA3.from_config(None, method_lib.BuildContext(table=table)),
    "prompt_tuning": lambda table: PromptTuning(num_virtual_tokens=3, init_token_ids=(4, 5, 6)),
}


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.parametrize("case", list(CASES))
def test_export_loads_in_hf_peft_with_equal_logits_and_reads_back(t5_dir, tmp_path, case):
  model, config = load.load_model(t5_dir)
  table = model.weight_table()
  method = CASES[case](table)
  adapter = _randomized(method.init(table, jax.random.PRNGKey(0), model.embed[...]), seed=1)
  hf_format.save_adapter(tmp_path / case, method, adapter, table, model_config=config)
  saved = hf_format.load_adapter(tmp_path / case, table, config)
  # Prompt tuning's init text is not a PEFT field (PEFT writes RANDOM): the rest is kept.
  assert saved[0] == (dataclasses.replace(method, init_token_ids=())
                      if case == "prompt_tuning" else method)
  for a, b in zip(jax.tree.leaves(saved[1]), jax.tree.leaves(adapter)):
    np.testing.assert_array_equal(a, b)
  ours = _ours(model, method, adapter)
  bare = _ours(model, None, None)
  assert _rel(bare, ours) > 1e-2  # the adapter changes the logits
  assert _rel(ours, _peft(t5_dir, tmp_path / case)) <= 1e-4


def test_targets_are_written_as_peft_reads_them(t5_dir):
  model, _ = load.load_model(t5_dir)
  table = model.weight_table()
  assert hf_format.hf_targets(table, table.check_projections(("q", "v"))) == ["q", "v"]
  regex = hf_format.hf_targets(table, ("enc.q",))
  assert isinstance(regex, str)
  assert hf_format.parse_targets(regex, table, "adapter_config.json") == ("enc.q",)
