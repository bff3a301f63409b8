"""A tiny transformers Llama and ours on the same random weights, for golden-logit tests."""

import torch
import transformers

from oppu_jax.models import llama, load


def tiny_hf_pair(tie: bool = False):
  """(config, our Llama, transformers' LlamaForCausalLM): the tiny GQA config, random weights and
  random norm weights, so a wrong norm wiring cannot hide behind ones."""
  cfg = llama.tiny_config(tie_embeddings=tie)
  hf_cfg = transformers.LlamaConfig(
      vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
      intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
      num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
      rope_theta=cfg.rope_theta, rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=tie,
  )
  torch.manual_seed(0)
  hf = transformers.LlamaForCausalLM(hf_cfg).eval()
  with torch.no_grad():
    for name, p in hf.named_parameters():
      if "norm" in name:
        p.copy_(1 + 0.1 * torch.randn_like(p))
  ours = load.from_hf_state_dict(cfg, {k: v.numpy() for k, v in hf.state_dict().items()})
  return cfg, ours, hf
