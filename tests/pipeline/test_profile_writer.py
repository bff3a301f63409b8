"""profile_writer: which model writes PAG profiles, in which prompt format; a base without a chat
template and no profile model is a one-line error before any work."""

import json

import pytest

from conftest import tiny_config
from oppu_jax.errors import ConfigError
from oppu_jax.eval import profiles as profiles_lib
from oppu_jax.models.tokenizer import Tokenizer
from oppu_jax.data import lamp
from oppu_jax.pipeline import experiment, profile_writer, run


def test_the_prompt_format_is_the_models_template_else_vicuna_for_a_profile_model(
    llama2_tokenizer_dir):
  chat = Tokenizer.from_hf_dir(llama2_tokenizer_dir())
  plain = Tokenizer.from_hf_dir(llama2_tokenizer_dir(chat_template=False))
  message = [{"role": "user", "content": "write"}]
  assert profile_writer.prompt_tokenizer(chat, "auto", given=False, name="b") is chat
  assert profile_writer.prompt_tokenizer(chat, "auto", given=True, name="p") is chat
  vicuna = profile_writer.prompt_tokenizer(plain, "auto", given=True, name="p")
  assert vicuna.apply_chat_template(message).endswith(" USER: write ASSISTANT:")
  assert vicuna.apply_chat_template(message).startswith("A chat between a curious user")
  assert vicuna.encode("some text") == plain.encode("some text")
  forced = profile_writer.prompt_tokenizer(chat, "vicuna", given=False, name="b")
  assert "ASSISTANT:" in forced.apply_chat_template(message)
  with pytest.raises(ConfigError, match=r"^config.profile.model_path \(unset\): b has no chat "):
    profile_writer.prompt_tokenizer(plain, "auto", given=False, name="b")
  with pytest.raises(ConfigError, match=r"^config.profile.model_path: p has no chat template"):
    profile_writer.prompt_tokenizer(plain, "chat", given=True, name="p")


@pytest.mark.slow
def test_pag_on_a_base_without_a_chat_template_is_written_by_the_profile_model(
    tiny_model_dir, llama2_tokenizer_dir, tmp_path, monkeypatch):
  from tiny_run import save_tiny_llama

  plain = llama2_tokenizer_dir(chat_template=False)  # a Llama-2-7B-style base
  no_writer = tiny_config("LaMP_3", tiny_model_dir, settings="pag_k0",
                          **{"model.tokenizer": plain})
  with pytest.raises(ConfigError, match=r"config.profile.model_path \(unset\): .* no chat templ"):
    run.run(no_writer, str(tmp_path / "w"))
  assert not (tmp_path / "w" / "config.json").exists()  # refused before the workdir is claimed

  writer = save_tiny_llama(str(tmp_path / "chat_model"), seed=1)  # ChatML: the embedded tokenizer
  config = tiny_config("LaMP_3", tiny_model_dir, settings="pag_k0",
                       **{"model.tokenizer": plain, "profile.model_path": writer,
                          "profile.max_new_tokens": 6})
  run.run(config, str(tmp_path / "w"))
  cache = json.loads((tmp_path / "w" / "profiles.json").read_text())
  by_writer = profiles_lib.model_digest(experiment.load_model(config, writer))
  assert cache["settings"]["model"] == by_writer
  assert by_writer != profiles_lib.model_digest(experiment.load_model(config))
  exp_tokenizer = Tokenizer.for_model(writer)  # the writer's prompts: ChatML, not the base's ids
  data = lamp.load(str(tmp_path / "w" / "data"), "LaMP_3")
  user = data.users[0]
  ids = profiles_lib.profile_prompt_ids(exp_tokenizer, "LaMP_3", user, num_items=10, seed=0,
                                        max_tokens=max(profiles_lib.DEFAULT_BUCKETS))
  assert cache["prompts"][user.id] == profiles_lib._digest_ids(ids)
  assert len(cache["profiles"]) == len(data.users)

  def no_generation(*args, **kwargs):
    raise AssertionError("a rerun must read the profiles from the cache")

  monkeypatch.setattr(profiles_lib, "generate", no_generation)
  (tmp_path / "w" / "predictions" / "pag_k0.json").unlink()
  run.run(config, str(tmp_path / "w"))
  assert json.loads((tmp_path / "w" / "profiles.json").read_text()) == cache
