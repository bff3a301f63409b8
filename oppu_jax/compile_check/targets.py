"""Chips this project can compile for without having them: TPU slices through libtpu's topology
descriptions, NVIDIA GPUs through the CUDA plugin's deviceless compilation.

Per device: HBM, peak dense bf16 FLOP/s and HBM bandwidth, as the vendors publish them. A TPU
v4 chip has two TensorCores, which libtpu's topology lists as two devices (no megacore): a v4
device here is half a chip (16 GiB, 137.5 TFLOP/s). v5p lists one device per chip.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from oppu_jax.errors import ConfigError

GiB = 1 << 30
H100 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "h100_sxm.textproto")


@dataclasses.dataclass(frozen=True)
class Target:
  name: str  # ours, e.g. "v5e-8"
  platform: str  # "tpu" | "cuda"
  topology: str  # libtpu's topology name ("v5e:2x4") or the CUDA plugin's ("1x1x8")
  devices: int
  hbm_bytes: int  # per device
  peak_flops: float  # per device, dense bf16
  hbm_bandwidth: float  # bytes/s per device


TARGETS = {t.name: t for t in (
    Target("v5e-4", "tpu", "v5e:2x2", 4, 16 * GiB, 197e12, 819e9),
    Target("v5e-8", "tpu", "v5e:2x4", 8, 16 * GiB, 197e12, 819e9),
    Target("v5e-256", "tpu", "v5e:16x16", 256, 16 * GiB, 197e12, 819e9),
    Target("v4-32", "tpu", "v4:2x2x4", 32, 16 * GiB, 137.5e12, 600e9),
    Target("v5p-128", "tpu", "v5p:4x4x4", 64, 95 * GiB, 459e12, 2765e9),
    Target("v6e-8", "tpu", "v6e:2x4", 8, 32 * GiB, 918e12, 1640e9),
    Target("8xH100", "cuda", "1x1x8", 8, 80 * GiB, 989e12, 3352e9),
)}


def get(name: str) -> Target:
  if name not in TARGETS:
    raise ConfigError(f"--topology={name!r}: unknown; choose from {', '.join(TARGETS)}")
  return TARGETS[name]


def prepare_environment(targets) -> None:
  """Before jax is imported: what deviceless compilation needs. TPU: no metadata-server query
  (there is no TPU VM), no lock on libtpu, and libtpu from `<venv>/tpu` when it was installed apart
  (scripts/setup.sh does, so that everyday runs never load it). CUDA: the CPU as jax's platform
  (the plugin then compiles for the described GPU without initialising CUDA)."""
  if any(t.platform == "tpu" for t in targets):
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    # Several checks may run at once (libtpu otherwise locks /tmp/libtpu_lockfile for one).
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    apart = os.path.join(sys.prefix, "tpu")
    if os.path.isdir(os.path.join(apart, "libtpu")) and apart not in sys.path:
      sys.path.append(apart)
  if any(t.platform == "cuda" for t in targets):
    os.environ["JAX_PLATFORMS"] = "cpu"
    apart = os.path.join(sys.prefix, "cuda")  # the gpu-check extra, if installed apart
    if os.path.isdir(os.path.join(apart, "jax_plugins")) and apart not in sys.path:
      sys.path.append(apart)


def devices(target: Target, gpu_target_config: str = ""):
  """The target's devices, for a Mesh (not addressable: programs are lowered and compiled, never
  run). A one-line ConfigError when this install cannot compile for it."""
  from jax.experimental import topologies

  if target.platform == "tpu":
    try:
      import libtpu  # noqa: F401 (only: is it there?)
    except ImportError:
      raise ConfigError(f"--topology={target.name}: libtpu is not installed; "
                        "`pip install -e '.[tpu]'` (or scripts/setup.sh)") from None
    found = topologies.get_topology_desc(topology_name=target.topology, platform="tpu").devices
  else:
    gpu_target_config = gpu_target_config or H100
    with open(gpu_target_config) as f:
      config = f.read()
    try:
      found = topologies.get_topology_desc(platform="cuda", topology=target.topology,
                                           target_config=config).devices
    except (NotImplementedError, RuntimeError) as e:
      raise ConfigError(f"--topology={target.name}: the CUDA plugin cannot compile here "
                        f"(`pip install -e '.[gpu-check]'`): {str(e).splitlines()[0]}") from None
  if len(found) != target.devices:
    raise ConfigError(f"--topology={target.name}: libtpu lists {len(found)} devices, the table "
                      f"says {target.devices}")
  return list(found)
