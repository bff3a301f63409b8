"""Runs a test script in a fresh Python with N virtual CPU devices (XLA fixes the device count
when it starts, so a test that needs a mesh runs its body in a subprocess)."""

import os
import subprocess
import sys


def device_env(devices: int) -> dict:
  """This process's environment for a child with `devices` CPU devices: the device count is
  appended to XLA_FLAGS, so the flags tests/conftest.py sets reach the child too."""
  flags = os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
  return dict(os.environ, XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu")


def run_script(path, text: str, devices: int, done: str) -> None:
  """Writes `text` to `path`, runs it with `devices` CPU devices; fails with its stderr's end
  unless it printed `done`."""
  path.write_text(text)
  out = subprocess.run([sys.executable, str(path)], env=device_env(devices), capture_output=True,
                       text=True, timeout=600)
  assert done in out.stdout, out.stderr[-3000:]
