"""Runs a test script in a fresh Python with N virtual CPU devices (XLA fixes the device count
when it starts, so a test that needs a mesh runs its body in a subprocess)."""

import os
import subprocess
import sys


def run_script(path, text: str, devices: int, done: str) -> None:
  """Writes `text` to `path`, runs it with `devices` CPU devices; fails with its stderr's end
  unless it printed `done`."""
  path.write_text(text)
  env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "")
             + f" --xla_force_host_platform_device_count={devices}").strip(),
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True,
                       timeout=600)
  assert done in out.stdout, out.stderr[-3000:]
