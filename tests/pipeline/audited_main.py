"""`python -m oppu_jax.main` as the multi-process tests start it, with two test instruments:

- OPPU_TEST_AUDIT=<file>: every path this process renames into place (os.replace / os.rename:
  files.output, the adapter writer and orbax all finish a write so) is appended to <file> as
  "<process id> <path>", so a test can tell who wrote what, and how often.
- OPPU_TEST_KILL_AT_STEP=<n>: the process SIGKILLs itself right after it saved the preemption
  checkpoint of step n (a preempted VM: no cleanup, no Python exit handlers);
- OPPU_TEST_KILL_AFTER_ADAPTER=1: the same right after it saved its first user adapter.
"""

import os
import signal
import sys

from absl import app


def _audit(path: str) -> None:
  who = os.environ.get("JAX_PROCESS_ID", "0")
  real_replace, real_rename = os.replace, os.rename

  def record(dst) -> None:
    with open(path, "a") as f:
      f.write(f"{who} {os.path.abspath(os.fspath(dst))}\n")

  def replace(src, dst, **kw):
    real_replace(src, dst, **kw)
    record(dst)

  def rename(src, dst, **kw):
    real_rename(src, dst, **kw)
    record(dst)

  os.replace, os.rename = replace, rename


def _kill_at(step: int) -> None:
  from oppu_jax.train import preemption

  save = preemption.StageCheckpoints.maybe_save

  def save_then_die(self, at, slots, losses):
    save(self, at, slots, losses)
    if at == step:
      os.kill(os.getpid(), signal.SIGKILL)

  preemption.StageCheckpoints.maybe_save = save_then_die


def _kill_after_adapter() -> None:
  from oppu_jax.peft import hf_format

  save = hf_format.save_adapter

  def save_then_die(*args, **kwargs):
    save(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

  hf_format.save_adapter = save_then_die


if __name__ == "__main__":
  if os.environ.get("OPPU_TEST_AUDIT"):
    _audit(os.environ["OPPU_TEST_AUDIT"])
  if os.environ.get("OPPU_TEST_KILL_AT_STEP"):
    _kill_at(int(os.environ["OPPU_TEST_KILL_AT_STEP"]))
  if os.environ.get("OPPU_TEST_KILL_AFTER_ADAPTER"):
    _kill_after_adapter()
  from oppu_jax import main

  sys.argv[0] = main.__file__
  app.run(main.main, flags_parser=main._parse_flags)
