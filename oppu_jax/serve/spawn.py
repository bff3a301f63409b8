"""`python -m oppu_jax.serve` started as a child process on a free local port, for the commands
and tests that talk to a real server (serve.check, benchmarks/serve_bench.py, the server tests)."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time

from oppu_jax.errors import OppuError


@contextlib.contextmanager
def running_server(workdir: str, *flags: str, cwd: str | None = None, timeout: float = 600,
                   stdout=subprocess.DEVNULL):
  """Yields (process, base URL "http://127.0.0.1:<port>") once GET /health answers; stops the
  server with SIGTERM (it finishes what it has) on the way out. A server that exits or does not
  answer within `timeout` seconds raises OppuError with the end of its log."""
  import httpx

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  proc = subprocess.Popen([sys.executable, "-m", "oppu_jax.serve", f"--workdir={workdir}",
                           f"--port={port}", *flags], cwd=cwd, stdout=stdout,
                          stderr=subprocess.STDOUT if stdout is subprocess.PIPE else
                          subprocess.PIPE, text=True)
  url = f"http://127.0.0.1:{port}"
  try:
    deadline = time.time() + timeout
    while True:
      try:
        if httpx.get(f"{url}/health").status_code == 200:
          break
      except httpx.TransportError:
        pass
      if proc.poll() is not None or time.time() > deadline:
        proc.kill()
        log = (proc.stdout if stdout is subprocess.PIPE else proc.stderr).read()
        raise OppuError(f"the server on {workdir} did not start: {log.strip()[-2000:]}")
      time.sleep(0.5)
    yield proc, url
  finally:
    if proc.poll() is None:
      proc.send_signal(signal.SIGTERM)
      try:
        proc.wait(300)
      except subprocess.TimeoutExpired:
        proc.kill()
