"""One-GPU check of jaxtool's fast paths, side by side with the plain-XLA paths they replace.

    PYTHONPATH=. python3 launch/gpu_check.py --out DIR            # on a GPU (or TPU): real shapes
    PYTHONPATH=. python3 launch/gpu_check.py --out DIR --tiny     # anywhere, tiny shapes (< 1 min on CPU)

Measures, each as a jitted step (compile excluded, median of --iters timed runs after a warm-up):

1. attention, Llama-3.2-1B shape (B 8, S 2048, 32 query / 8 KV heads, head dim 64, bf16, causal),
   forward + gradients w.r.t. q, k, v: ms and XLA temporaries of impl "xla" vs the fused kernel of
   the backend ("cudnn" on GPU, "splash" on TPU, splash in Pallas interpret mode for --tiny on CPU),
   max |difference| of outputs and gradients; also with padded rows (segment ids, packed=False).
2. log-probs of the output layer at N 16384 tokens, D 2048, V 128256 (bf16): full logits
   (`losses.logps_from_logits(h @ w)`) vs `ops.xent.chunked_token_logps`, value + gradients w.r.t. h and w.
3. weight-only int8 / NF4 `qmatmul` vs a bf16 matmul at the Llama-3.1-8B MLP shape (8192 tokens,
   4096 → 14336): forward, and forward + gradient w.r.t. x (what a LoRA step over a frozen base needs).

Prints a markdown table and writes DIR/gpu_check.json. Imports only jax, numpy and jaxtool modules
that import nothing else (no grain, datasets, gguf, torch). Each section is independent: a failure
is recorded in the table and the JSON, and the rest still runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from jaxtool import losses
from jaxtool.models import quant
from jaxtool.ops import attention as attn
from jaxtool.ops import xent

GiB = 2 ** 30


def _block(x):
    return jax.block_until_ready(x)


def timed(fn, args, iters: int) -> dict:
    """Compile (timed apart), one warm-up run, then the median of `iters` timed runs; XLA's memory
    accounting of the compiled step."""
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    temp = getattr(mem, "temp_size_in_bytes", None) if mem is not None else None
    out = _block(compiled(*args))
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        _block(compiled(*args))
        times.append(time.perf_counter() - t)
    return {"ms": 1e3 * statistics.median(times), "compile_s": compile_s,
            "temp_gib": None if temp is None else temp / GiB, "out": out}


def _maxdiff(a, b, valid=None) -> float:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if valid is not None:
        a, b = a[valid], b[valid]
    return float(np.max(np.abs(a - b))) if a.size else 0.0


# ============================================================================================
# 1. attention
# ============================================================================================

def check_attention(tiny: bool, iters: int, backend: str) -> list[dict]:
    if tiny:
        B, S, H, K, Dh, dtype = 2, 256, 4, 2, 16, jnp.float32
    else:
        B, S, H, K, Dh, dtype = 8, 2048, 32, 8, 64, jnp.bfloat16
    fused = {"gpu": "cudnn", "tpu": "splash"}.get(backend, "splash")
    r = np.random.default_rng(0)
    q = jnp.asarray(r.normal(size=(B, S, H, Dh)), dtype)
    k = jnp.asarray(r.normal(size=(B, S, K, Dh)), dtype)
    v = jnp.asarray(r.normal(size=(B, S, K, Dh)), dtype)
    cot = jnp.asarray(r.normal(size=(B, S, H, Dh)), dtype)
    lengths = np.array([S - (S // 4) * (b % 4) for b in range(B)])      # rows padded by 0, ¼, ½, ¾
    seg_np = (np.arange(S)[None, :] < lengths[:, None]).astype(np.int32)
    rows = []
    for case, seg in (("causal", None), ("causal + padded rows", jnp.asarray(seg_np))):
        valid = np.ones((B, S), bool) if seg is None else seg_np.astype(bool)
        wmask = jnp.asarray(valid, dtype)[:, :, None, None]
        results = {}
        for impl in ("xla", fused):
            def loss(q, k, v, impl=impl, seg=seg):
                o = attn.attention(q, k, v, segment_ids=seg, causal=True, packed=False, impl=impl)
                return jnp.sum((o * cot * wmask).astype(jnp.float32)), o
            step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))
            row = {"section": "attention", "case": f"{case} [{B}×{S}, {H}/{K} heads, Dh {Dh}, {jnp.dtype(dtype).name}]",
                   "impl": impl}
            try:
                res = timed(step, (q, k, v), iters)
                (_, o), grads = res.pop("out")
                results[impl] = (o, grads)
                row.update(res)
                row["tflops"] = 3.5 * attn.flops(B, S, H, Dh, causal=True) / (res["ms"] * 1e-3) / 1e12
            except Exception as e:  # noqa: BLE001 - record and go on
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            rows.append(row)
        if "xla" in results and fused in results:
            (o1, g1), (o2, g2) = results["xla"], results[fused]
            rows[-1]["max_abs_diff"] = {"out": _maxdiff(o1, o2, valid), "dq": _maxdiff(g1[0], g2[0], valid),
                                        "dk": _maxdiff(g1[1], g2[1], valid), "dv": _maxdiff(g1[2], g2[2], valid)}
            rows[-1]["max_abs_out"] = float(jnp.max(jnp.abs(o1.astype(jnp.float32))))
    return rows


# ============================================================================================
# 2. output-layer log-probs
# ============================================================================================

def check_xent(tiny: bool, iters: int) -> list[dict]:
    if tiny:
        N, D, V, dtype, chunk = 512, 64, 1000, jnp.float32, 128
    else:
        N, D, V, dtype, chunk = 16384, 2048, 128256, jnp.bfloat16, xent.DEFAULT_CHUNK_TOKENS
    r = np.random.default_rng(1)
    h = jnp.asarray(r.normal(size=(N, D)), dtype)
    w = jnp.asarray(r.normal(size=(D, V)) * D ** -0.5, dtype)
    t = jnp.asarray(r.integers(0, V, N), jnp.int32)
    fns = {"full logits": lambda h, w: losses.logps_from_logits(h @ w, t),
           f"chunked ({chunk} tokens)": lambda h, w: xent.chunked_token_logps(h, w, t, chunk_tokens=chunk)}
    rows, results = [], {}
    for name, f in fns.items():
        def loss(h, w, f=f):
            lp = f(h, w)
            return jnp.sum(lp), lp
        step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
        row = {"section": "log-probs", "case": f"N {N}, D {D}, V {V}, {jnp.dtype(dtype).name}", "impl": name}
        try:
            res = timed(step, (h, w), iters)
            (_, lp), grads = res.pop("out")
            results[name] = (lp, grads)
            row.update(res)
        except Exception as e:  # noqa: BLE001
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        rows.append(row)
    if len(results) == 2:
        (a, ga), (b, gb) = results.values()
        rows[-1]["max_abs_diff"] = {"logp": _maxdiff(a, b), "dh": _maxdiff(ga[0], gb[0]), "dw": _maxdiff(ga[1], gb[1])}
        rows[-1]["max_abs_out"] = float(jnp.max(jnp.abs(a)))
    return rows


# ============================================================================================
# 3. quantised matmul
# ============================================================================================

def check_qmatmul(tiny: bool, iters: int) -> list[dict]:
    T, D, F = (64, 64, 128) if tiny else (8192, 4096, 14336)
    dtype = jnp.bfloat16
    r = np.random.default_rng(2)
    x = jnp.asarray(r.normal(size=(T, D)), dtype)
    w32 = jnp.asarray(r.normal(size=(D, F)) * 0.02, jnp.float32)
    weights = {"bf16": w32.astype(dtype), "int8": quant.quantize(w32, "int8", axis_in=0),
               "nf4": quant.quantize(w32, "nf4")}
    del w32
    rows = []
    for name, wt in weights.items():
        nbytes = wt.nbytes if quant.is_quantized(wt) else wt.size * wt.dtype.itemsize
        fwd = jax.jit(lambda x, w: quant.qmatmul(x, w, 1, dtype))
        grad = jax.jit(jax.grad(lambda x, w: jnp.sum(quant.qmatmul(x, w, 1, dtype).astype(jnp.float32))))
        for mode, fn in (("forward", fwd), ("forward + d x", grad)):
            row = {"section": "qmatmul", "case": f"[{T}, {D}] @ [{D}, {F}] {mode}", "impl": name,
                   "weight_gib": nbytes / GiB, "bytes_per_param": nbytes / (D * F)}
            try:
                res = timed(fn, (x, wt), iters)
                res.pop("out")
                row.update(res)
                flop = 2 * T * D * F * (1 if mode == "forward" else 2)
                row["tflops"] = flop / (res["ms"] * 1e-3) / 1e12
            except Exception as e:  # noqa: BLE001
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            rows.append(row)
    return rows


# ============================================================================================

def _fmt(x, spec=".2f"):
    return "–" if x is None else format(x, spec)


def table(rows: list[dict]) -> str:
    lines = ["| section | case | impl | ms | TFLOP/s | temp GiB | compile s | max abs diff vs first row | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = r.get("max_abs_diff")
        diff_s = ", ".join(f"{k} {v:.3g}" for k, v in diff.items()) if diff else ""
        if diff and "max_abs_out" in r:
            diff_s += f" (max |out| {r['max_abs_out']:.3g})"
        note = r.get("error", "")
        if "bytes_per_param" in r:
            note = (note + " " if note else "") + f"{r['bytes_per_param']:.3f} B/param"
        lines.append(f"| {r['section']} | {r['case']} | {r['impl']} | {_fmt(r.get('ms'))} | {_fmt(r.get('tflops'), '.1f')} "
                     f"| {_fmt(r.get('temp_gib'), '.3f')} | {_fmt(r.get('compile_s'), '.1f')} | {diff_s} | {note} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="directory for gpu_check.json")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (any backend, CPU included)")
    ap.add_argument("--iters", type=int, default=None, help="timed runs per step (default 10; 2 with --tiny)")
    ap.add_argument("--only", default="attention,xent,qmatmul", help="comma-separated sections")
    args = ap.parse_args(argv)
    iters = args.iters or (2 if args.tiny else 10)
    backend = jax.default_backend()
    dev = jax.devices()[0]
    info = {"jax": jax.__version__, "backend": backend, "device": getattr(dev, "device_kind", str(dev)),
            "python": platform.python_version(), "tiny": args.tiny, "iters": iters}
    if backend == "gpu":
        try:
            from jax._src.lib import cuda_versions  # noqa: PLC0415 - informational only
            info["cudnn"] = cuda_versions.cudnn_get_version() if cuda_versions else None
        except Exception:  # noqa: BLE001
            info["cudnn"] = None
    print(json.dumps(info), flush=True)
    rows: list[dict] = []
    sections = {"attention": lambda: check_attention(args.tiny, iters, backend),
                "xent": lambda: check_xent(args.tiny, iters),
                "qmatmul": lambda: check_qmatmul(args.tiny, iters)}
    t0 = time.perf_counter()
    for name in args.only.split(","):
        t = time.perf_counter()
        try:
            new = sections[name]()
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            new = [{"section": name, "case": "", "impl": "", "error": f"{type(e).__name__}: {e}"}]
        rows += new
        print(table(new), f"\n({name}: {time.perf_counter() - t:.1f} s)", flush=True)
    md = table(rows)
    print("\n" + md + f"\n\ntotal {time.perf_counter() - t0:.1f} s on {info['device']} ({backend}), jax {jax.__version__}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu_check.json"), "w") as fh:
        json.dump({"info": info, "rows": rows, "total_s": time.perf_counter() - t0}, fh, indent=1, default=str)
    with open(os.path.join(args.out, "gpu_check.md"), "w") as fh:
        fh.write(md + "\n")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
