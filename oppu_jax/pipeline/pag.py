"""PAG profiles for a run: every user's, written once by a chat model (profile_writer.py) and
cached in profiles.json, or the release's own; behaviour shift's users get theirs from their cut
histories."""

from __future__ import annotations

import shutil

from oppu_jax import files
from oppu_jax.eval import profiles as profiles_lib
from oppu_jax.models.decoding import Decoding
from oppu_jax.pipeline import cluster, profile_writer, progress, shift
from oppu_jax.pipeline.experiment import Experiment, input_path, load_model, needs_profiles
from oppu_jax.pipeline.settings import Setting

_SHIFTED = "pag.shifted_profiles"  # Experiment.memo key


def ensure_profiles(exp: Experiment, settings) -> None:
  """Every user's PAG profile (generated once, cached in profiles.json), if `settings` need it."""
  if exp.profiles or not needs_profiles(settings):
    return
  c = exp.config
  given = profiles_lib.profiles_from_release(exp.data)
  if all(u.id in given for u in exp.data.users):  # the release's: no profile model needed
    exp.profiles = {u.id: given[u.id] for u in exp.data.users}
    return
  cache = exp.path("profiles.json")
  users = exp.data.users
  if cluster.count() > 1:  # each process writes its share into its part, from the joint cache
    part = cluster.part_path(cache)
    if files.is_done(cache) and not files.is_done(part):
      with files.output(part) as tmp:
        shutil.copyfile(cache, tmp)
    users = cluster.share(users, cost=lambda u: min(len(u.history), c.profile.num_items))
    cluster.log_share("PAG: writes the profiles of", [u.id for u in users])
    cache, users_cache = part, cache
  with profile_writer_of(exp) as (model, tokenizer):
    make = lambda users, cache, advance=None: _write(
        exp, model, tokenizer, users, cache, given=given, progress=advance, mesh=exp.local_mesh)
    with progress.bar("PAG profiles", len(users), "users", exp.show_progress) as bar:
      exp.profiles = make(users, cache, bar.advance)
    if cluster.count() > 1:
      cluster.barrier("profiles written")
      if cluster.is_main():
        profiles_lib.join_caches(cluster.part_paths(users_cache), users_cache)
      cluster.barrier("profiles joined")
      exp.profiles = make(exp.data.users, users_cache)  # all cached: nothing generated


def profile_writer_of(exp: Experiment):
  """The model and tokenizer that write PAG profiles (profile_writer.py): a decoder-only chat
  model, config.profile.model_path's or the base."""
  return profile_writer.writer(exp.config, exp.base_model, exp.tokenizer,
                               load_model=lambda path: load_model(exp.config, path),
                               local_path=lambda path: input_path(exp.config, path))


def profiles_for(exp: Experiment, setting: Setting) -> dict[str, str]:
  """The PAG profiles `setting` reads: a shifted setting's test users get profiles written from
  their cut histories (cached apart, in profiles@shift<percent kept>.json)."""
  if setting.history != "shift" or not (setting.profile or setting.base == "P"):
    return exp.profiles
  if _SHIFTED not in exp.memo:
    c = exp.config
    users = shift.users_of(exp, setting)
    with progress.bar("PAG profiles (shifted histories)", len(users), "users",
                      exp.show_progress) as bar, profile_writer_of(exp) as (model, tokenizer):
      cache = exp.path(f"profiles@{shift.shift_suffix(c.analysis.shift_keep)}.json")
      exp.memo[_SHIFTED] = {**exp.profiles, **_write(exp, model, tokenizer, users, cache,
                                                      progress=bar.advance)}
  return exp.memo[_SHIFTED]


def _write(exp: Experiment, model, tokenizer, users, cache: str, **kw) -> dict[str, str]:
  """`users`' profiles by config.profile's recipe (greedy), cached in `cache`; `kw`: given,
  progress, mesh."""
  c = exp.config
  return profiles_lib.user_profiles(
      model, tokenizer, exp.task, users, cache_path=cache, num_items=c.profile.num_items,
      decoding=Decoding(max_new_tokens=c.profile.max_new_tokens), seed=c.seed, **kw)
