"""Adapters in the HF PEFT format: our logits against HF PEFT's both ways, files as PEFT writes
them, round trips, atomic overwrite, one-line errors."""

import copy
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import safe_open

from oppu_jax.errors import AdapterFormatError
from oppu_jax.models import llama
from oppu_jax.peft import hf_format
from oppu_jax.peft.hf_format import load_adapter, save_adapter
from oppu_jax.peft.ia3 import IA3
from oppu_jax.peft.lora import Lora
from oppu_jax.peft.prompt_tuning import PromptTuning

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft_lib = pytest.importorskip("peft")
from tiny_hf import tiny_hf_pair  # noqa: E402 (needs torch)

ALL = ("q", "k", "v", "o", "gate", "up", "down")


def test_lora_matches_peft_with_same_weights(forward):
  for targets in [("q", "v"), ALL]:
    cfg, ours, hf = tiny_hf_pair()
    lora = Lora(targets=targets, rank=4, alpha=8.0)
    adapter = _random_lora(cfg, lora, seed=1)
    hf_peft = peft_lib.get_peft_model(hf, peft_lib.LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=_hf_names(targets),
        task_type="CAUSAL_LM")).eval()
    with torch.no_grad():
      for target in targets:
        for i in range(cfg.num_layers):
          module = _hf_module(hf_peft, i, target)
          module.lora_A["default"].weight.copy_(_t(adapter["layers"][target]["a"][i].T))
          module.lora_B["default"].weight.copy_(_t(adapter["layers"][target]["b"][i].T))
    _assert_same_logits(forward, ours, lora, adapter, hf_peft)


def test_lora_export_loads_with_peft_from_pretrained(forward, tmp_path):
  cfg, ours, hf = tiny_hf_pair()
  lora = Lora(targets=ALL, rank=4, alpha=6.0)
  adapter = _random_lora(cfg, lora, seed=2)
  save_adapter(tmp_path / "u0", lora, adapter, _table(cfg))
  hf_peft = peft_lib.PeftModel.from_pretrained(hf, tmp_path / "u0").eval()
  _assert_same_logits(forward, ours, lora, adapter, hf_peft)


def test_lora_saved_by_peft_imports(forward, tmp_path):
  cfg, ours, hf = tiny_hf_pair()
  hf_peft = peft_lib.get_peft_model(hf, peft_lib.LoraConfig(
      r=4, lora_alpha=16, target_modules=["q_proj", "k_proj", "down_proj"],
      task_type="CAUSAL_LM")).eval()
  _randomize(hf_peft, "lora_", lambda p: torch.nn.init.normal_(p, std=0.1))
  hf_peft.save_pretrained(tmp_path / "peft")
  lora, adapter = load_adapter(tmp_path / "peft", _table(cfg))
  assert lora == Lora(targets=("q", "k", "down"), rank=4, alpha=16.0, dropout=0.0)
  _assert_same_logits(forward, ours, lora, adapter, hf_peft)


def test_ia3_both_ways(forward, tmp_path):
  cfg, ours, hf = tiny_hf_pair()
  ia3 = IA3(targets=("k", "v", "up", "down"), feedforward=("down",))
  adapter = _perturb(ia3.init(_table(cfg), None), seed=3, std=0.3)
  save_adapter(tmp_path / "ours", ia3, adapter, _table(cfg))
  exported = peft_lib.PeftModel.from_pretrained(copy.deepcopy(hf), tmp_path / "ours").eval()
  _assert_same_logits(forward, ours, ia3, adapter, exported)

  hf_peft = peft_lib.get_peft_model(hf, peft_lib.IA3Config(
      target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"],
      task_type="CAUSAL_LM")).eval()
  _randomize(hf_peft, "ia3_l", lambda p: p.copy_(1 + 0.3 * torch.randn_like(p)))
  hf_peft.save_pretrained(tmp_path / "peft")
  ia3, adapter = load_adapter(tmp_path / "peft", _table(cfg))
  assert ia3 == IA3(targets=("k", "v", "down"), feedforward=("down",))
  _assert_same_logits(forward, ours, ia3, adapter, hf_peft)


def test_prompt_tuning_both_ways_unpadded(forward, tmp_path):
  cfg, ours, hf = tiny_hf_pair()
  pt = PromptTuning(num_virtual_tokens=5)
  adapter = {"prompt": jnp.asarray(_rng(4).normal(0, 0.5, (5, cfg.hidden_size)), jnp.float32)}
  save_adapter(tmp_path / "ours", pt, adapter, _table(cfg), model_config=cfg)
  exported = peft_lib.PeftModel.from_pretrained(copy.deepcopy(hf), tmp_path / "ours").eval()
  # HF numbers the virtual + real tokens 0..n+T-1 (it ignores position_ids under prompt
  # tuning), which equals our n + position only when no row is padded.
  _assert_same_logits(forward, ours, pt, adapter, exported, padded=False)

  hf_peft = peft_lib.get_peft_model(hf, peft_lib.PromptTuningConfig(
      num_virtual_tokens=3, task_type="CAUSAL_LM")).eval()
  hf_peft.save_pretrained(tmp_path / "peft")
  pt, adapter = load_adapter(tmp_path / "peft", _table(cfg))
  assert pt.num_virtual_tokens == 3
  _assert_same_logits(forward, ours, pt, adapter, hf_peft, padded=False)


def test_files_are_what_peft_writes(tmp_path):
  cfg, _, hf = tiny_hf_pair()
  cases = [
      (Lora(targets=("q", "v"), rank=4, alpha=8.0),
       peft_lib.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                           task_type="CAUSAL_LM")),
      (IA3(), peft_lib.IA3Config(target_modules=["k_proj", "v_proj", "down_proj"],
                                 feedforward_modules=["down_proj"], task_type="CAUSAL_LM")),
      (PromptTuning(num_virtual_tokens=5, init_token_ids=(7,)),
       peft_lib.PromptTuningConfig(num_virtual_tokens=5, task_type="CAUSAL_LM")),
  ]
  for i, (method, peft_config) in enumerate(cases):
    ours_dir, peft_dir = tmp_path / f"ours{i}", tmp_path / f"peft{i}"
    adapter = _init(method, cfg, seed=i)
    save_adapter(ours_dir, method, adapter, _table(cfg), model_config=cfg)
    peft_lib.get_peft_model(copy.deepcopy(hf), peft_config).save_pretrained(peft_dir)
    ours_cfg, peft_cfg = (_config(ours_dir), _config(peft_dir))
    assert ours_cfg == peft_cfg, {k: (ours_cfg.get(k), peft_cfg.get(k))
                                  for k in ours_cfg.keys() | peft_cfg.keys()
                                  if ours_cfg.get(k) != peft_cfg.get(k)}
    assert _tensor_specs(ours_dir) == _tensor_specs(peft_dir)


def test_save_then_load_gives_identical_pytrees(tmp_path):
  cfg = llama.tiny_config()
  for i, method in enumerate([Lora(targets=("v", "q", "down"), rank=3, alpha=5.5, dropout=0.1),
                              IA3(targets=("k", "v", "gate", "down"), feedforward=("down",)),
                              PromptTuning(num_virtual_tokens=4, init_token_ids=(3, 9))]):
    adapter = _perturb(_init(method, cfg, seed=i), seed=i, std=1.0)
    save_adapter(tmp_path / str(i), method, adapter, _table(cfg), model_config=cfg)
    loaded_method, loaded = load_adapter(tmp_path / str(i), _table(cfg))
    assert jax.tree.structure(loaded) == jax.tree.structure(adapter)
    jax.tree.map(np.testing.assert_array_equal, loaded, adapter)
    if isinstance(method, Lora):
      assert loaded_method == Lora(targets=("q", "v", "down"), rank=3, alpha=5.5, dropout=0.1)


def test_bf16_adapter_saved_by_peft_loads_as_f32(tmp_path):
  cfg, _, hf = tiny_hf_pair()
  hf_peft = peft_lib.get_peft_model(hf.to(torch.bfloat16), peft_lib.LoraConfig(
      r=2, lora_alpha=4, target_modules=["v_proj"], task_type="CAUSAL_LM"),
      autocast_adapter_dtype=False)  # PEFT keeps adapters in f32 unless told otherwise
  _randomize(hf_peft, "lora_", lambda p: torch.nn.init.normal_(p, std=0.1))
  hf_peft.save_pretrained(tmp_path / "bf16")
  with safe_open(tmp_path / "bf16" / hf_format.WEIGHTS_NAME, "flax") as f:
    assert {f.get_tensor(k).dtype for k in f.keys()} == {jnp.dtype(jnp.bfloat16)}
  _, adapter = load_adapter(tmp_path / "bf16", _table(cfg))
  want = _hf_module(hf_peft, 1, "v").lora_B["default"].weight.detach().float().numpy().T
  assert adapter["layers"]["v"]["b"].dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(adapter["layers"]["v"]["b"][1]), want)


def test_overwrite_is_atomic_and_clean(tmp_path, monkeypatch):
  cfg = llama.tiny_config()
  directory = tmp_path / "user7"
  lora = Lora(rank=2)
  save_adapter(directory, lora, _init(lora, cfg, seed=0), _table(cfg))
  (directory / "README.md").write_text("mine")
  ia3 = IA3()
  save_adapter(directory, ia3, _init(ia3, cfg, seed=0), _table(cfg))
  assert isinstance(load_adapter(directory, _table(cfg))[0], IA3)
  assert (directory / "README.md").read_text() == "mine"  # other files are left alone
  assert sorted(os.listdir(tmp_path)) == ["user7"]  # no temp dirs left behind

  def fail(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(hf_format, "save_file", fail)
  with pytest.raises(OSError, match="disk full"):
    save_adapter(directory, lora, _init(lora, cfg, seed=1), _table(cfg))
  assert isinstance(load_adapter(directory, _table(cfg))[0], IA3)  # the old adapter is intact
  assert sorted(os.listdir(tmp_path)) == ["user7"]


def test_errors_are_one_line_and_name_the_file(tmp_path):
  cfg = llama.tiny_config()
  lora = Lora(targets=("q", "v"), rank=4)
  directory = tmp_path / "a"

  def expect(match, model_config=cfg):
    with pytest.raises(AdapterFormatError, match=match) as err:
      load_adapter(directory, _table(model_config))
    assert "\n" not in str(err.value) and str(directory) in str(err.value)

  def edit_config(**changes):
    save_adapter(directory, lora, _init(lora, cfg, seed=0), _table(cfg))
    config = _config(directory)
    config.update(changes)
    (directory / hf_format.CONFIG_NAME).write_text(json.dumps(config))

  expect(f"{hf_format.CONFIG_NAME}: missing")
  save_adapter(directory, lora, _init(lora, cfg, seed=0), _table(cfg))
  os.remove(directory / hf_format.WEIGHTS_NAME)
  expect(f"{hf_format.WEIGHTS_NAME}: missing")
  edit_config(peft_type="LOHA")
  expect("unsupported peft_type 'LOHA'")
  edit_config(target_modules=["q_proj", "lm_head"])
  expect(r"unknown target module\(s\) \['lm_head'\]")
  edit_config(target_modules=r".*layers\.0\.self_attn\.q_proj")
  expect("adapt only some layers")
  edit_config(use_dora=True)
  expect("does not support")
  edit_config(r=8)
  expect(r"lora_A.weight has shape \[4, 64\], expected \[8, 64\]")
  edit_config()
  expect(r"missing tensor '.*layers\.2\.self_attn\.q_proj\.lora_A\.weight'",
         cfg.replace(num_layers=3))
  edit_config(target_modules=["q_proj"])
  expect("unexpected tensor '.*v_proj")


@pytest.mark.slow
def test_smollm2_lora_export_matches_peft(forward, smollm2, smollm2_hf, tmp_path):
  model, cfg = smollm2
  lora = Lora(targets=("q", "v"), rank=8, alpha=16.0)
  adapter = _random_lora(cfg, lora, seed=5, b_std=0.02)
  save_adapter(tmp_path / "smol", lora, adapter, _table(cfg),
               base_model_name_or_path="SmolLM2-135M-Instruct")
  # from_pretrained injects the LoRA layers in place: a copy keeps the session fixture bare.
  hf_peft = peft_lib.PeftModel.from_pretrained(copy.deepcopy(smollm2_hf), tmp_path / "smol")
  tokens = np.array([[1, 504, 3458, 314, 253, 1234, 28, 30, 40, 3124, 9, 17],
                     [2, 2, 2, 2, 504, 3458, 314, 7, 8812, 42, 11, 300]])
  mask = np.array([[1] * 12, [0] * 4 + [1] * 8], bool)
  _assert_same_logits(forward, model, lora, adapter, hf_peft.eval(), batch=(tokens, mask), rel=1e-4)


# ----------------------------------------------------------------------------------------------


def _random_lora(cfg, lora, seed, b_std=0.1):
  """A LoRA adapter with PEFT-style uniform A and a random (nonzero) B; numpy, as eager
  jax.random compiles op by op."""
  rng, projections, layers = _rng(seed), _table(cfg).projections, {}
  for target in lora.targets:
    d_in, d_out = projections[target].shape
    bound = 1 / np.sqrt(d_in)
    a = rng.uniform(-bound, bound, (cfg.num_layers, d_in, lora.rank))
    b = rng.normal(0, b_std, (cfg.num_layers, lora.rank, d_out))
    layers[target] = {"a": jnp.asarray(a, jnp.float32), "b": jnp.asarray(b, jnp.float32)}
  return {"layers": layers}


def _init(method, cfg, seed):
  if isinstance(method, Lora):
    return _random_lora(cfg, method, seed)
  embed = _rng(seed).normal(0, 1, (cfg.vocab_size, cfg.hidden_size)).astype(np.float32)
  return method.init(_table(cfg), None, embed=jnp.asarray(embed))


def _perturb(adapter, seed, std):
  rng = _rng(seed)
  return jax.tree.map(lambda x: jnp.asarray(x + rng.normal(0, std, x.shape), jnp.float32),
                      adapter)


def _rng(seed):
  return np.random.default_rng(seed)


def _assert_same_logits(forward, ours, method, adapter, hf_peft, *, padded=True, batch=None,
                        rel=1e-5):
  """Our adapted.forward logits equal the PEFT model's on the real tokens; the adapter matters."""
  tokens, mask = batch or _batch(padded)
  positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
  tokens_, positions_, mask_ = jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask)
  got = forward(ours, method, adapter, tokens_, positions_, mask_)
  bare = forward(ours, None, None, tokens_, positions_, mask_)
  kwargs = dict(input_ids=torch.tensor(tokens),
                attention_mask=torch.tensor(mask.astype(np.int64)))
  if padded:  # PEFT ignores (and warns about) position_ids under prompt tuning
    kwargs["position_ids"] = torch.tensor(positions)
  with torch.no_grad():
    want = hf_peft(**kwargs).logits.numpy()
  want = want[:, want.shape[1] - tokens.shape[1]:][mask]  # drop PEFT's virtual-token outputs
  got, bare = np.asarray(got)[mask], np.asarray(bare)[mask]
  scale = np.abs(want).max()
  assert np.abs(got - want).max() / scale <= rel, np.abs(got - want).max() / scale
  assert np.abs(bare - want).max() / scale > 100 * rel  # the adapter changed the logits


def _batch(padded):
  tokens = np.array([[5, 17, 33, 2, 91, 64, 8, 12], [0, 0, 0, 44, 9, 71, 3, 100]])
  mask = np.array([[1] * 8, [0, 0, 0, 1, 1, 1, 1, 1] if padded else [1] * 8], bool)
  return tokens, mask


def _table(cfg):
  return llama.weight_table(cfg)


def _hf_names(targets):
  projections = _table(llama.tiny_config()).projections
  return [projections[t].hf_module(0).split(".")[-1] for t in targets]


def _hf_module(hf_peft, layer, target):
  block = hf_peft.base_model.model.model.layers[layer]
  # "model.layers.0.self_attn.q_proj" -> block.self_attn.q_proj
  parent, name = _table(llama.tiny_config()).projections[target].hf_module(0).split(".")[3:5]
  return getattr(getattr(block, parent), name)


def _t(x):
  return torch.tensor(np.asarray(x))


def _randomize(hf_peft, marker, init):
  with torch.no_grad():
    for name, p in hf_peft.named_parameters():
      if marker in name:
        init(p)


def _config(directory):
  """adapter_config.json with the set-valued lists made order-free (PEFT writes sets)."""
  config = json.loads((directory / hf_format.CONFIG_NAME).read_text())
  for key in ("target_modules", "feedforward_modules"):
    if isinstance(config.get(key), list):
      config[key] = sorted(config[key])
  return config


def _tensor_specs(directory):
  with safe_open(directory / hf_format.WEIGHTS_NAME, "np") as f:
    return f.metadata(), {k: (f.get_tensor(k).shape, f.get_tensor(k).dtype) for k in f.keys()}
