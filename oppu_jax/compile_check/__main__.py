"""Compiles a run's programs for a chip this host does not have, and says whether they fit.

  python -m oppu_jax.compile_check --model=llama-2-7b --topology=v5e-8,v5e-256 \
      --config=configs/lamp3.py
  python -m oppu_jax.compile_check --model=flan-t5-xxl --config=configs/study.py:paper \
      --answer_tokens=126 --topology=v5p-128
  python -m oppu_jax.compile_check --model=/ckpt/llama-2-13b --topology=v6e-8 --slots=8 --mesh=2x4

--model: a known name (shapes.KNOWN) or an HF config.json / checkpoint directory; no weights are
read. --config: the run's config (its PEFT, batch sizes, cutoff, decoding); the default is
LaMP_3's. Without --slots the planner picks the mesh, U and remat of the multi-user step; every
program is then compiled on that mesh. Prints a table per target (`--json` keeps the numbers).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from oppu_jax.compile_check import targets as targets_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "The run's config file (default: "
                                          "LaMP_3's).")
_MODEL = flags.DEFINE_string("model", None, "A known model name or a config.json path.")
_TOPOLOGY = flags.DEFINE_list("topology", ["v5e-4"], "Targets: " + ", ".join(targets_lib.TARGETS))
_PROGRAMS = flags.DEFINE_list("programs", None, "Programs to compile (default: all).")
_SLOTS = flags.DEFINE_integer("slots", 0, "Users per multi-user step; 0: the planner's.")
_MESH = flags.DEFINE_string("mesh", "", "users x model, e.g. 2x4; '': the planner's (or all "
                            "devices on the users axis with --slots).")
_MODEL_AXES = flags.DEFINE_list("model_axes", None, "Model-axis sizes the planner tries "
                                 "(default 1, 2, 4, 8, 16 where they divide the devices).")
_REMAT = flags.DEFINE_enum("remat", "auto", ["auto", "never", "always"],
                           "Activation recomputation in the training steps; auto: the plan's.")
_PROMPT = flags.DEFINE_integer("prompt_tokens", 0, "A training/query prompt's tokens; 0: "
                               "config.model.cutoff.")
_ANSWER = flags.DEFINE_integer("answer_tokens", 1, "A training answer's tokens.")
_LABELS = flags.DEFINE_integer("labels", 5, "Label strings the scorer compares.")
_MFU = flags.DEFINE_float("mfu", 0.35, "Model FLOPs utilisation for the predicted step time.")
_JSON = flags.DEFINE_string("json", "", "Also write every figure to this JSON file.")
_GPU = flags.DEFINE_string("gpu_target_config", "", "GpuTargetConfigProto text file (for cuda "
                           "targets).")

GiB = 1 << 30


def main(argv) -> None:
  del argv
  logging.getLogger().setLevel(logging.INFO)
  from oppu_jax.errors import OppuError

  try:
    chosen = [targets_lib.get(name) for name in _TOPOLOGY.value]
    targets_lib.prepare_environment(chosen)
    print(_versions(chosen))
    results = []
    for target in chosen:  # each target's figures are kept as soon as they are made
      results.append(check(target))
      _write_json(results)
  except OppuError as e:
    sys.exit(f"error: {e}")


def _write_json(results) -> None:
  if _JSON.value:
    os.makedirs(os.path.dirname(os.path.abspath(_JSON.value)), exist_ok=True)
    with open(_JSON.value, "w") as f:
      json.dump(results, f, indent=1)


def check(target) -> dict:
  from oppu_jax import config as config_lib
  from oppu_jax.compile_check import analysis, planner, programs, shapes
  from oppu_jax.errors import ConfigError
  from oppu_jax.sharding import mesh as mesh_lib

  if not _MODEL.value:
    raise ConfigError("--model is required: " + ", ".join(shapes.KNOWN) + " or a config.json")
  config = _CONFIG.value if _CONFIG.value is not None else config_lib.for_task("LaMP_3")
  model = shapes.abstract_model(_MODEL.value, param_dtype=config.model.param_dtype,
                                compute_dtype=config.model.compute_dtype)
  recipe = programs.Recipe(config, _PROMPT.value or config.model.cutoff, _ANSWER.value,
                           labels=_LABELS.value)
  devices = targets_lib.devices(target, _GPU.value)
  names = _PROGRAMS.value or [n for n in programs.PROGRAMS  # what a run of this config compiles
                               if n != "task_adaptation" or config.task_adapt.enabled]
  for name in names:
    if name not in programs.PROGRAMS:
      raise ConfigError(f"--programs: unknown {name!r}; choose from {', '.join(programs.PROGRAMS)}")
  out = {"target": target.name, "model": _MODEL.value, "devices": len(devices),
         "hbm_bytes": target.hbm_bytes, "peak_flops": target.peak_flops, "mfu": _MFU.value}
  if _SLOTS.value:
    users, model_axis = _mesh_shape(len(devices))
    slots, remat = _SLOTS.value, _REMAT.value == "always"
    if slots % users:
      raise ConfigError(f"--slots={slots}: the users axis of {target.name}'s {users} x "
                        f"{model_axis} mesh splits the slots, so they must be a multiple of "
                        f"{users} (or give --mesh)")
    plans_text = ""
  else:
    axes = [int(m) for m in _MODEL_AXES.value or []] or None
    if _MESH.value:
      axes = [_mesh_shape(len(devices))[1]]
    best, tried = planner.plan(model, recipe, target, devices, config.peft.method, axes=axes)
    users, model_axis, slots, remat = best.users_axis, best.model_axis, best.slots, best.remat
    if _REMAT.value != "auto":
      remat = _REMAT.value == "always"
    out["plans"] = [_plan_json(p) for p in tried]
    out["plan"] = _plan_json(best)
    plans_text = _plans_table(tried, best, target)
  mesh = mesh_lib.make_mesh(users, model_axis, devices)
  rows = []
  for name in names:
    training = name in programs.TRAINING
    row_remat = remat if training else None
    program = programs.build(name, model, recipe, slots=slots, mesh=mesh, remat=bool(row_remat))
    if not _SLOTS.value and name == f"users_step[{config.peft.method}]" and remat == best.remat:
      cost = best.cost  # the planner compiled it already
    else:
      logging.info("%s: compiling %s", target.name, name)
      cost = analysis.analyse(program.trace(), program.loop_trips)
      if training and _REMAT.value == "auto" and not row_remat and not cost.fits(
          target.hbm_bytes):  # as the trainer does (train.remat = "auto"): recompute if needed
        row_remat = True
        program = programs.build(name, model, recipe, slots=slots, mesh=mesh, remat=True)
        logging.info("%s: compiling %s with remat", target.name, name)
        cost = analysis.analyse(program.trace(), program.loop_trips)
    rows.append(dict(program=name, batch=program.shape, rows=program.rows, users=program.users,
                     remat=row_remat,
                     devices_working=program.devices_working(mesh),
                     **_cost_json(cost, target, program.devices_working(mesh), _MFU.value)))
  out.update(mesh=[users, model_axis], slots=slots, remat=remat, programs=rows)
  print(_header(target, len(devices), users, model_axis, slots, remat) + plans_text
        + _programs_table(rows))
  sys.stdout.flush()
  return out


def _versions(chosen) -> str:
  """The compilers' versions: they decide every figure below."""
  libraries = ["jax", "jaxlib"] + (["libtpu"] if any(t.platform == "tpu" for t in chosen) else [])
  libraries += ["jax-cuda12-plugin"] if any(t.platform == "cuda" for t in chosen) else []
  found = []
  for name in libraries:
    try:
      found.append(f"{name} {importlib.metadata.version(name)}")
    except importlib.metadata.PackageNotFoundError:
      found.append(f"{name} (not installed)")
  return "compiled by " + ", ".join(found)


def _mesh_shape(devices: int) -> tuple[int, int]:
  from oppu_jax.errors import ConfigError

  if not _MESH.value:
    return devices, 1
  try:
    users, model = (int(x) for x in _MESH.value.lower().split("x"))
  except ValueError:
    raise ConfigError(f"--mesh={_MESH.value!r}: expected USERSxMODEL, e.g. 2x4") from None
  if users * model != devices:
    raise ConfigError(f"--mesh={_MESH.value}: {users} x {model} != {devices} devices")
  return users, model


def _cost_json(cost, target, devices: int, mfu: float) -> dict:
  """`devices`: those that share the program's FLOPs (a batch the users axis does not divide is
  computed whole on every users position)."""
  step = cost.flops / devices / (target.peak_flops * mfu)
  return dict(arguments=cost.arguments, temps=cost.temps, outputs=cost.outputs, code=cost.code,
              bytes_per_device=cost.bytes_per_device,
              fits=cost.fits(target.hbm_bytes), refused=cost.refused, failed=cost.failed,
              flops=cost.flops,
              step_seconds=step, collectives=cost.collectives,
              compile_seconds=round(cost.compile_seconds, 1))


def _plan_json(p) -> dict:
  return dict(mesh=[p.users_axis, p.model_axis], remat=p.remat, slots=p.slots,
              bytes_per_device=p.cost.bytes_per_device, refused=p.cost.refused,
              flops=p.cost.flops,
              compilations=p.compilations)


def _header(target, devices, users, model_axis, slots, remat) -> str:
  return (f"\n## {_MODEL.value} on {target.name} ({devices} x {target.platform} devices, "
          f"{target.hbm_bytes / GiB:.0f} GiB HBM, {target.peak_flops / 1e12:.0f} TFLOP/s bf16 "
          f"each): mesh {users} x {model_axis} (users x model), U = {slots}, "
          f"remat {'yes' if remat else 'no'}\n")


def _plans_table(tried, best, target) -> str:
  from oppu_jax.compile_check.analysis import size_text as _size

  lines = ["\nPlanner (multi-user step; largest U that fits per mesh):\n",
           "| mesh (users x model) | remat | U | per device | fits | TFLOP / step | compilations |"
           " chosen |", "|---|---|---:|---:|---|---:|---:|---|"]
  for p in tried:
    need = _size(p.cost.bytes_per_device) if not p.cost.failed else "compiler error"
    lines.append(f"| {p.mesh_text} | {'yes' if p.remat else 'no'} | {p.slots or '1: none fit'} | "
                 f"{need if not p.cost.refused else 'temps alone ' + need} | "
                 f"{'yes' if p.cost.fits(target.hbm_bytes) else 'no'} | "
                 f"{p.cost.flops / 1e12:.1f} | {p.compilations} | {'<-' if p is best else ''} |")
  return "\n".join(lines) + "\n"


def _programs_table(rows) -> str:
  from oppu_jax.compile_check.analysis import collectives_text, size_text as _size

  lines = ["\n| program | batch | users | remat | per device (args + temps + outputs + code) | "
           "fits | TFLOP / call | s / call at MFU | collectives in the HLO (result bytes) | "
           "compile s |", "|---|---|---:|---|---|---|---:|---:|---|---:|"]
  for r in rows:
    parts = " + ".join(_size(r[k]) for k in ("arguments", "temps", "outputs", "code"))
    if r["refused"]:
      parts = "refused by the compiler: its temporaries alone"
    if r["failed"]:
      parts = f"compiler error: {r['failed'][:160]}"
    remat = {None: "", True: "yes", False: "no"}[r["remat"]]
    lines.append(f"| {r['program']} | {r['batch']} | {r['users']} | {remat} | "
                 f"{'?' if r['failed'] else _size(r['bytes_per_device'])} ({parts}) | "
                 f"{'yes' if r['fits'] else 'NO'} | "
                 f"{r['flops'] / 1e12:.2f} | {r['step_seconds']:.3f} | "
                 f"{collectives_text(r['collectives'])} | {r['compile_seconds']} |")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  app.run(main)
