#!/usr/bin/env python
"""Per-chip memory of a recipe's training step on a mesh, from XLA's own buffer assignment: the
step is compiled (never run) for N fake CPU devices, so any mesh can be planned on a laptop.

    python launch/memory_plan.py configs/diatool_dpo/llama3_8b.yaml --model llama3.1-8b \
        --devices 16 --mesh fsdp=8,tensor=2 [key=value ...]
    python launch/memory_plan.py --table [--json OUT]     # the README table (8B, 70B, 405B recipes)

How: `XLA_FLAGS=--xla_force_host_platform_device_count=N` is set before JAX starts (each plan runs
in its own process for that reason); the train state — parameters or LoRA adapters plus the frozen
(possibly quantised) base, the optimizer state — and one global batch are `ShapeDtypeStruct`s that
carry the shardings `jaxtool.train.state.build_state` gives the real arrays (`abstract_setup` below
mirrors it; tests/test_launch.py checks the two agree on a tiny model); the train step
`steps.make_train_step(...)` builds for `build_state` (state donated), is lowered and
compiled; `compiled.memory_analysis()` gives the per-device bytes of arguments, outputs, aliased
(donated) buffers and temporaries. Peak per chip ≈ arguments + outputs − aliased + temporaries.

Read the numbers as XLA:CPU's plan of the same sharded program: the state (arguments) column is
exact — it is the sharded bytes of parameters, optimizer state and batch on one chip — while the
temporaries are XLA:CPU's: the TPU/GPU compilers fuse, schedule and lay out buffers differently,
and the fused attention kernels (splash, cuDNN) do not exist on CPU (the XLA attention path, which
keeps each query block's scores, is compiled instead). The batch is the recipe's global batch at its full
`data.max_length` (the worst step); preference batches carry precomputed reference log-probs when
the recipe precomputes them; the selective-logits budget is off (all positions).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the README table: recipe, overrides, model preset (the recipe's model.path is a local download),
# chips, mesh, the hardware it is meant for
TABLE = [
    ("configs/diatool_dpo/llama3_8b.yaml", [], "llama3.1-8b", 8, "fsdp=8", "8 × H100 / v5p-16"),
    ("configs/diatool_dpo/llama3_8b.yaml", [], "llama3.1-8b", 16, "fsdp=8,tensor=2", "2 nodes × 8 H100"),
    ("configs/calm/llama3_70b_lora.yaml", [], "llama3.3-70b", 16, "fsdp=8,tensor=2", "2 nodes × 8 H100"),
    ("configs/calm/llama3_70b_lora.yaml", ["batch_size=32", "data.max_length=2048"], "llama3.3-70b", 256,
     "fsdp=32,tensor=8", "v5e-256"),
    ("configs/calm/llama3_405b_qlora.yaml", [], "llama3.1-405b", 64, "fsdp=8,tensor=8", "v5p-128"),
    ("configs/calm/llama3_405b_qlora.yaml", ["lora.base_quant=none"], "llama3.1-405b", 64, "fsdp=8,tensor=8",
     "v5p-128"),
]


def parse_mesh(text: str) -> dict:
    out = {"data": 1, "fsdp": 1, "tensor": 1}
    for part in filter(None, text.split(",")):
        k, _, v = part.partition("=")
        if k not in out or not v.lstrip("-").isdigit():
            raise SystemExit(f"memory_plan: --mesh expects data=N,fsdp=N,tensor=N, got {text!r}")
        out[k] = int(v)
    return out


def abstract_setup(c, model_cfg, mesh, total_steps: int = 1000):
    """(state, state_shardings, frozen, ref_params) as ShapeDtypeStructs with their shardings — what
    `jaxtool.train.state.build_state` places on `mesh` for config `c` (same steps, no arrays)."""
    import jax
    import jax.numpy as jnp

    from jaxtool import sharding
    from jaxtool.models import lora, quant
    from jaxtool.models.family import family_of
    from jaxtool.train import steps
    from jaxtool.train.optim import make_optimizer
    from jaxtool.train.state import optimizer_state_shardings

    def place(tree, shardings):
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)

    fam = family_of(model_cfg)
    params = fam.abstract_params(model_cfg, c.model.param_dtype)
    params = place(params, sharding.tree_shardings(fam.param_axes(model_cfg), params, mesh))
    rep = sharding.replicated(mesh)
    if c.lora.enabled and c.lora.base_quant != "none":  # build_state: quantised, sharded like the plain base
        params = jax.eval_shape(lambda p: quant.quantize_params(p, c.lora.base_quant, fam.projections), params)
        params = place(params, sharding.tree_shardings(quant.quantized_param_axes(fam.param_axes(model_cfg), params),
                                                       params, mesh))
    if c.lora.enabled:
        adapters = jax.eval_shape(lambda: lora.init_adapters(model_cfg, c.lora.rank, c.lora.targets, jax.random.key(0)))
        trainable = place(adapters, sharding.tree_shardings(lora.adapter_axes(adapters, model_cfg), adapters, mesh))
        frozen = params
    else:
        trainable, frozen = params, None
    ref_params = None
    if c.loss.objective.needs_reference and c.loss.reference == "online":
        ref_params = frozen if c.lora.enabled else params
    optimizer, schedule = make_optimizer(c.optim, total_steps)
    t_sh = jax.tree.map(lambda x: x.sharding, trainable)
    o_abs = jax.eval_shape(optimizer.init, trainable)
    o_sh = optimizer_state_shardings(o_abs, t_sh, mesh)
    state = steps.TrainState(jax.ShapeDtypeStruct((), jnp.int32, sharding=rep), trainable, place(o_abs, o_sh))
    return state, steps.TrainState(rep, t_sh, o_sh), frozen, ref_params, optimizer, schedule


def abstract_batch(c, mesh, max_turns: int):
    """One global batch of the recipe at full length, sharded over the batch axes."""
    import jax
    import jax.numpy as jnp

    from jaxtool import sharding
    from jaxtool.data.batch import FEATURES, Batch, PairBatch, RefLogps

    B, L = c.batch_size, c.data.max_length

    def arr(shape, dtype=jnp.int32):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding.batch_sharding(mesh, len(shape), shape=shape))

    def one():
        return Batch(**{k: arr((B, L)) for k in FEATURES}, index=arr((B,)))

    if c.data.kind != "preference":
        return one()
    obj = c.loss.objective
    ref = None
    if obj.needs_reference and c.loss.reference == "precomputed":
        T = max(max_turns, 1)
        ref = RefLogps(arr((B,), jnp.float32), arr((B,), jnp.float32), arr((B, T), jnp.float32),
                       arr((B, T), jnp.float32))
    return PairBatch(one(), one(), index=arr((B,)), ref=ref)


def plan(recipe: str, model: str, mesh: dict, overrides=(), max_turns: int = 8) -> dict:
    """Compile the recipe's train step for `mesh` on this process's devices; memory per device."""
    import time

    import jax

    from jaxtool import sharding
    from jaxtool.config import load_config
    from jaxtool.models import preset
    from jaxtool.models.run import RunOptions
    from jaxtool.train import steps

    c = load_config(recipe, list(overrides))
    model_cfg = preset(model)
    m = sharding.make_mesh(mesh["data"], mesh["fsdp"], mesh["tensor"])
    # the plan is for an accelerator: "auto" is what it resolves to there (bfloat16), not this CPU's float32
    compute = "bfloat16" if c.model.compute_dtype == "auto" else c.model.compute_dtype
    run = RunOptions(compute_dtype=compute, remat=c.model.remat,
                     lora_scale=(c.lora.alpha / c.lora.rank) if c.lora.enabled else 1.0,
                     attention=c.model.attention, logits_chunk=c.model.logits_chunk, packed=c.data.packing)
    turns = steps.step_turns(c.loss, max_turns)
    state, state_sh, frozen, ref_params, optimizer, schedule = abstract_setup(c, model_cfg, m)
    batch = abstract_batch(c, m, turns)
    train = steps.make_train_step(model_cfg, c.loss, optimizer, run=run, use_lora=c.lora.enabled, max_turns=turns,
                                  grad_accum=c.optim.grad_accum, schedule=schedule, state_shardings=state_sh)
    t0 = time.time()
    with sharding.use_mesh(m):
        compiled = train.lower(state, batch, frozen, ref_params, n_logits=None).compile()
    ma = compiled.memory_analysis()
    gib = 1 << 30
    out = {"recipe": recipe, "model": model, "devices": len(jax.devices()), "mesh": dict(m.shape),
           "batch": c.batch_size, "seq": c.data.max_length, "kind": c.data.kind,
           "trainable": "LoRA r=%d" % c.lora.rank if c.lora.enabled else "full",
           "base": c.lora.base_quant if c.lora.enabled and c.lora.base_quant != "none" else c.model.param_dtype,
           "compile_s": round(time.time() - t0, 1)}
    if ma is None:
        out["error"] = "this backend gives no memory analysis"
        return out
    arg, outb, alias, temp = (ma.argument_size_in_bytes, ma.output_size_in_bytes, ma.alias_size_in_bytes,
                              ma.temp_size_in_bytes)
    out.update(arguments_gib=arg / gib, outputs_gib=outb / gib, aliased_gib=alias / gib, temps_gib=temp / gib,
               peak_gib=(arg + outb - alias + temp) / gib)
    return out


def _subprocess_plan(recipe, model, devices, mesh, overrides, max_turns) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "PYTHONPATH": ROOT + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")}
    cmd = [sys.executable, os.path.abspath(__file__), recipe, "--model", model, "--devices", str(devices),
           "--mesh", mesh, "--max-turns", str(max_turns), "--json-only", *overrides]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        return {"recipe": recipe, "model": model, "devices": devices, "mesh": mesh,
                "error": (out.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown(rows: list[dict], hardware: list[str] | None = None) -> str:
    head = ("| recipe | model | trainable / base | global batch × length | chips | mesh (data×fsdp×tensor) | "
            "state (args) GiB/chip | temporaries GiB/chip | peak GiB/chip |")
    lines = [head, "|" + "---|" * 9]
    for i, r in enumerate(rows):
        mesh = r["mesh"] if isinstance(r["mesh"], str) else "×".join(str(r["mesh"][k]) for k in ("data", "fsdp", "tensor"))
        hw = f" ({hardware[i]})" if hardware else ""
        if "error" in r:
            lines.append(f"| {os.path.basename(r['recipe'])} | {r['model']} | | | {r['devices']}{hw} | {mesh} | "
                         f"error: {r['error']} | | |")
            continue
        name = os.path.relpath(r['recipe'], ROOT) if os.path.isabs(r['recipe']) else r['recipe']
        if r.get("overrides"):
            name += " " + " ".join(r["overrides"])
        lines.append(f"| {name} | "
                     f"{r['model']} | {r['trainable']} / {r['base']} | {r['batch']} × {r['seq']} ({r['kind']}) | "
                     f"{r['devices']}{hw} | {mesh} | {r['arguments_gib']:.1f} | {r['temps_gib']:.1f} | "
                     f"{r['peak_gib']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", nargs="?", help="YAML recipe")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--model", help="model preset (llama3.1-8b, llama3.3-70b, llama3.1-405b, ...)")
    p.add_argument("--devices", type=int, help="number of chips (fake CPU devices)")
    p.add_argument("--mesh", default="fsdp=-1", help="e.g. fsdp=8,tensor=2 (one of them may be -1)")
    p.add_argument("--max-turns", type=int, default=8, help="assistant turns per pair (per-turn objectives)")
    p.add_argument("--table", action="store_true", help="plan every row of the README table")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    p.add_argument("--json-only", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_intermixed_args(argv)
    if a.table:
        rows = []
        for recipe, over, model, n, mesh, hw in TABLE:
            r = _subprocess_plan(os.path.join(ROOT, recipe), model, n, mesh, over, a.max_turns)
            rows.append({**r, "recipe": recipe, "overrides": over, "hardware": hw})
            print(markdown(rows[-1:], [hw]).splitlines()[-1], file=sys.stderr, flush=True)
        print(markdown(rows, [hw for *_, hw in TABLE]))
        if a.json:
            with open(a.json, "w") as fh:
                json.dump(rows, fh, indent=1)
        return 0 if all("error" not in r for r in rows) else 1
    if not (a.recipe and a.model and a.devices):
        p.error("give RECIPE --model PRESET --devices N (or --table)")
    want = f"--xla_force_host_platform_device_count={a.devices}"
    if want not in os.environ.get("XLA_FLAGS", "") or "jax" in sys.modules:
        r = _subprocess_plan(a.recipe, a.model, a.devices, a.mesh, a.overrides, a.max_turns)
    else:
        r = plan(a.recipe, a.model, parse_mesh(a.mesh), a.overrides, a.max_turns)
    if a.json_only:
        print(json.dumps(r))
        return 0
    print(markdown([r]))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump([r], fh, indent=1)
    return 0 if "error" not in r else 1


if __name__ == "__main__":
    sys.exit(main())
