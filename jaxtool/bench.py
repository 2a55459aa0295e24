"""`jaxtool bench {sft,dpo,decode,scaling,all}`: our cost side by side with the PyTorch/transformers
path, in the same process, on the same machine and inputs.

  sft      tokens/s of one full training step (forward + backward + AdamW) on the SmolLM2-135M
           shape, float32 and bfloat16, for a small batch × length grid: jaxtool's jitted step vs
           transformers' LlamaForCausalLM + torch.optim.AdamW (in a worker process). A/B rounds,
           warm-up excluded, medians reported. MFU = model FLOPs/s ÷ the matmul peak this command
           measures for the same framework and dtype on the device that side's step runs on (JAX: the
           default device; PyTorch: CUDA when its step runs there, else the CPU); on a GPU/TPU the
           chip's published bf16 peak (`PUBLISHED_PEAKS`) is a second column.
  dpo      DiaTool-DPO and DPO steps relative to the SFT step at equal tokens, with reference
           log-probs precomputed (carried with the batch) and computed on the fly (frozen params);
           every step of the comparison runs the same `RunOptions` (one example per row, `--remat`,
           `--attention`, the backend's compute dtype), and each row names the kernel it ran.
  decode   new tokens/s of batched greedy decoding (batch 1, 8, 32; 128 new tokens) vs
           transformers `generate` on the same prompts, in the backend's default compute dtype
           (bfloat16 on GPU/TPU, float32 on CPU).
  scaling  step time and peak memory (XLA's own accounting) vs sequence length and batch, with and
           without remat; compile time vs number of layers, scanned vs unrolled.

Every comparison prints a table (ours, theirs, ratio) and is written to OUT/bench.json; `all`
also draws OUT/bench.png. Each row records its compute dtype, remat and the attention kernel that
actually ran (`jaxtool.ops.attention.resolutions`). On a GPU/TPU backend the same commands run and
MFU is reported against the chip's published bf16 peak as well (e.g. `--shape llama3.2-1b` on an H100). PyTorch is needed only for
the "theirs" columns (pip install "jaxtool[test]"); without it those columns are skipped.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Any, Callable

SECTIONS = ("sft", "dpo", "decode", "scaling")

# Published dense bf16 matmul peaks (TFLOP/s, no sparsity) by device kind, the second MFU column on
# GPU/TPU backends: NVIDIA's H100/H200 (SXM), H100 PCIe, A100 and L4 datasheets; Google Cloud's TPU
# system-architecture pages. Matched as a substring of `device_kind`, longest key first.
PUBLISHED_PEAKS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "TPU v4": 275.0,
                   "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5p": 459.0, "TPU v6 lite": 918.0, "TPU v6e": 918.0}
CHIP_PEAK_BF16 = PUBLISHED_PEAKS  # the old name


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def _median(xs):
    return statistics.median(xs) if xs else float("nan")


def _sync(x):
    import jax

    return jax.block_until_ready(x)


def backend_info() -> dict:
    import jax

    d = jax.devices()[0]
    return {"platform": d.platform, "device": getattr(d, "device_kind", str(d)), "devices": jax.device_count(),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "jax": jax.__version__}


def chip_peak(device_kind: str) -> float | None:
    """The published bf16 peak (FLOP/s) of a device kind, None when it is not in `PUBLISHED_PEAKS`."""
    for k in sorted(PUBLISHED_PEAKS, key=len, reverse=True):
        if k.lower() in device_kind.lower():
            return PUBLISHED_PEAKS[k] * 1e12
    return None


def bench_run_options(args, compute_dtype: str | None = None):
    """The one `RunOptions` every step of a comparison runs: random rows hold one full-length
    example each (`packed=False`: the fused kernels apply), `--remat`, `--attention`, and
    `compute_dtype` (default: the backend's, bfloat16 on GPU/TPU, float32 on CPU)."""
    from jaxtool.models.run import RunOptions, default_compute_dtype

    return RunOptions(compute_dtype=compute_dtype or default_compute_dtype(), packed=False,
                      remat=getattr(args, "remat", "none") or "none", attention=getattr(args, "attention", "auto") or "auto")


def _kernel_fields(run) -> dict:
    """What a row says about how it ran: dtype, remat, packed, the attention kernel requested and the
    one(s) traced since the last `reset_resolutions`."""
    from jaxtool.ops import attention

    return {"compute_dtype": run.resolved_compute_dtype, "remat": run.remat, "packed": run.packed,
            "attention_requested": run.attention, "attention": attention.describe_resolutions()}


def measure_matmul_peak(dtype: str = "float32", n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a large square JAX matmul in `dtype` on JAX's default device (8192² off CPU): the MFU
    denominator of our rows of that dtype."""
    import jax
    import jax.numpy as jnp

    if jax.devices()[0].platform != "cpu":
        n = 8192
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x, y: x @ y)
    _sync(f(a, a))
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        _sync(f(a, a))
        ts.append(time.perf_counter() - t)
    return 2 * n ** 3 / min(ts)


def torch_device() -> str:
    """Where the PyTorch side's steps run: "cuda" when torch sees a GPU, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def measure_torch_matmul_peak(n: int = 2048, repeats: int = 5, dtype: str = "float32") -> float | None:
    """FLOP/s of a square PyTorch matmul in `dtype` on the device the PyTorch side's steps run on
    (`torch_device()`: on CUDA its bf16 rows run under bf16 autocast, i.e. bf16 matmuls; 8192²)."""
    try:
        import torch
    except ImportError:
        return None
    device = torch_device()
    cuda = device == "cuda"
    if cuda:
        n = max(n, 8192)
    a = torch.ones(n, n, dtype=getattr(torch, dtype), device=device)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    a @ a
    sync()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ a
        sync()
        ts.append(time.perf_counter() - t)
    return 2 * n ** 3 / min(ts)


def _grid(spec: str | None, accelerator: bool) -> list[tuple[int, int]]:
    spec = spec or ("8x1024,8x2048" if accelerator else "4x512,2x1024")
    out = []
    for part in spec.split(","):
        b, l = part.lower().split("x")
        out.append((int(b), int(l)))
    return out


def _random_batch(B: int, L: int, vocab: int, seed: int = 0, mask_fraction: float = 1.0):
    """A `Batch` of random tokens, every row one full-length example (3 assistant turns)."""
    import numpy as np

    from jaxtool.data.batch import Batch

    rng = np.random.RandomState(seed)
    mask = np.ones((B, L), np.int32)
    if mask_fraction < 1.0:
        mask[:, : int(L * (1 - mask_fraction))] = 0
    return Batch(inputs=rng.randint(0, vocab, (B, L)).astype(np.int32),
                 targets=rng.randint(0, vocab, (B, L)).astype(np.int32),
                 loss_mask=mask, turn_ids=np.where(mask > 0, (np.arange(L) * 3 // L)[None, :], -1).astype(np.int32),
                 positions=np.tile(np.arange(L, dtype=np.int32), (B, 1)), segment_ids=np.ones((B, L), np.int32),
                 index=np.arange(B, dtype=np.int32))


class _Timer:
    """Alternating A/B timing: call `run(name, fn)` in turn; the first call of each is warm-up."""

    def __init__(self):
        self.times: dict[str, list[float]] = {}
        self.first: dict[str, float] = {}
        self.switch_times: dict[str, list[float]] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> None:
        """Time `fn()`; a `fn` that returns a float has timed itself (the PyTorch worker) and that
        time is used."""
        t = time.perf_counter()
        out = fn()
        dt = out if isinstance(out, float) else time.perf_counter() - t
        if name in self.first:
            self.times.setdefault(name, []).append(dt)
        else:
            self.first[name] = dt

    def switch(self, name: str, fn: Callable[[], Any]) -> None:
        """Run `fn` once untimed but record how long it took (the step after a switch of side)."""
        t = time.perf_counter()
        out = fn()
        self.switch_times.setdefault(name, []).append(out if isinstance(out, float) else time.perf_counter() - t)

    def median(self, name: str) -> float:
        return _median(self.times.get(name, []))


# --------------------------------------------------------------------------------------------
# ours / theirs: one training step
# --------------------------------------------------------------------------------------------

def _jax_sft_step(cfg, B: int, L: int, lc=None, reference: str | None = None, run=None):
    """A ready-to-call jitted step of ours on a random batch; returns (call, tokens per call)."""
    import jax
    import jax.numpy as jnp

    import numpy as np

    from jaxtool.config import LossConfig, OptimConfig
    from jaxtool.data.batch import PairBatch, RefLogps
    from jaxtool.models import family_of
    from jaxtool.models.run import DEFAULT_RUN
    from jaxtool.train import steps
    from jaxtool.train.optim import make_optimizer

    run = run or DEFAULT_RUN
    lc = lc or LossConfig(type="sft")
    params = family_of(cfg).init_params(cfg, jax.random.key(0))
    opt, _ = make_optimizer(OptimConfig(lr=1e-5), 1000)
    state = {"s": steps.TrainState(jnp.zeros((), jnp.int32), params, opt.init(params))}
    max_turns = 3 if lc.objective.needs_turns else 0
    if lc.objective.kind == "sft":
        batch = jax.tree.map(jnp.asarray, _random_batch(B, L, cfg.vocab_size))
    else:  # B pairs of length L: 2·B·L tokens through the model
        ref = None
        if reference == "precomputed":
            T = max(max_turns, 1)
            ref = RefLogps(np.full((B,), -100.0, np.float32), np.full((B,), -100.0, np.float32),
                           np.full((B, T), -30.0, np.float32), np.full((B, T), -30.0, np.float32))
        batch = jax.tree.map(jnp.asarray, PairBatch(_random_batch(B, L, cfg.vocab_size, 1),
                                                    _random_batch(B, L, cfg.vocab_size, 2),
                                                    index=np.arange(B, dtype=np.int32), ref=ref))
    ref_params = jax.tree.map(jnp.copy, params) if reference == "online" else None  # frozen, not donated
    f = steps.make_train_step(cfg, lc, opt, run=run, max_turns=max_turns)

    def call():
        state["s"], m = f(state["s"], batch, None, ref_params)
        _sync(m["loss"])

    tokens = B * L * (1 if lc.objective.kind == "sft" else 2)
    return call, tokens


def _nnx_sft_step(cfg, B: int, L: int, run=None):
    """The same step as `_jax_sft_step` written the Flax NNX way on the module (`--nnx`):
    `jaxtool.models.nnx.CausalLM` over the same initial parameters, `nnx.Optimizer` with the
    trainer's optimizer, `nnx.value_and_grad` of the same SFT loss (`steps._micro_loss`: the
    objective registry's token-mean NLL over chunked log-probs), `nnx.jit` with the model and
    optimizer donated. Only the NNX machinery differs; returns (call, tokens per call)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxtool.config import LossConfig, OptimConfig
    from jaxtool.models import family_of
    from jaxtool.models.nnx import CausalLM
    from jaxtool.models.run import DEFAULT_RUN
    from jaxtool.train import steps
    from jaxtool.train.optim import make_optimizer

    run = run or DEFAULT_RUN
    lc = LossConfig(type="sft")
    model = CausalLM(cfg, params=family_of(cfg).init_params(cfg, jax.random.key(0)), run=run)
    opt, _ = make_optimizer(OptimConfig(lr=1e-5), 1000)
    optimizer = nnx.Optimizer(model, opt, wrt=nnx.Param)
    batch = jax.tree.map(jnp.asarray, _random_batch(B, L, cfg.vocab_size))

    def loss_fn(m, b):
        total, (count, _) = steps._micro_loss(m.pure_params(), None, None, b, cfg=cfg, lc=lc, use_lora=False,
                                              max_turns=0, run=m.run)
        return total / jnp.maximum(count, 1.0)

    @nnx.jit(donate_argnums=(0, 1))
    def step(m, o, b):
        loss, grads = nnx.value_and_grad(loss_fn)(m, b)
        o.update(m, grads)
        return loss

    def call():
        _sync(step(model, optimizer, batch))

    return call, B * L


def _torch_sft_step(cfg, B: int, L: int, dtype: str, compile: bool = False):
    """The same step in transformers + torch.optim.AdamW.

    CPU: eager PyTorch with the weights in `dtype` (CPU threads as configured). CUDA: the usual
    mixed-precision recipe — float32 weights, bf16 autocast, SDPA attention, fused AdamW, no
    activation checkpointing — and with `compile` the model under `torch.compile`."""
    import torch
    from transformers import LlamaConfig as HFConfig
    from transformers import LlamaForCausalLM

    hf = HFConfig(**{k: v for k, v in cfg.to_hf("float32").items() if k not in ("architectures", "torch_dtype")})
    cuda = torch.cuda.is_available()
    tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    torch.manual_seed(0)
    if cuda:
        model = LlamaForCausalLM._from_config(hf, attn_implementation="sdpa").cuda().train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0, fused=True)
    else:
        model = LlamaForCausalLM(hf).to(tdtype).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
    fwd = torch.compile(model) if compile else model
    b = _random_batch(B, L, cfg.vocab_size)
    dev = "cuda" if cuda else "cpu"
    ids = torch.tensor(b["inputs"], dtype=torch.long, device=dev)
    labels = torch.tensor(b["targets"], dtype=torch.long, device=dev)

    def call():
        with torch.autocast("cuda", dtype=tdtype, enabled=cuda and tdtype != torch.float32):
            out = fwd(input_ids=ids)
            loss = torch.nn.functional.cross_entropy(out.logits.float().reshape(-1, out.logits.shape[-1]),
                                                     labels.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()

    return call, B * L


def _torch_decode_model(hf_config: dict, state_dict: dict):
    """transformers LlamaForCausalLM holding the given (numpy) weights."""
    import torch
    from transformers import LlamaConfig as HFConfig
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(HFConfig(**hf_config)).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()}, strict=False)
    model.tie_weights()
    return model


def _torch_decode_call(model, prompts: list[list[int]], new_tokens: int):
    """transformers `generate` (greedy, exactly `new_tokens` new tokens) on `prompts`."""
    import torch

    ids = torch.tensor(prompts)

    def call():
        with torch.no_grad():
            model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                           eos_token_id=None, pad_token_id=0)
    return call


def _torch_worker_main(conn) -> None:
    """The PyTorch side of the benchmark, in its own process: it keeps torch's allocator and OpenMP
    threads out of the JAX process (in one process, the first JAX step after a torch step ran up to
    50% slower here), and it sleeps on the pipe while our side runs."""
    calls: dict[str, Callable[[], Any]] = {}
    decode_model = None
    while True:
        op, *a = conn.recv()
        try:
            if op == "close":
                conn.send(("ok", None))
                return
            if op == "peak":
                conn.send(("ok", measure_torch_matmul_peak(dtype=a[0] if a else "float32")))
            elif op == "device":
                conn.send(("ok", torch_device()))
            elif op == "sft":
                name, cfg, B, L, dtype, *rest = a
                calls[name] = _torch_sft_step(cfg, B, L, dtype, *rest)[0]
                conn.send(("ok", None))
            elif op == "decode_model":
                decode_model = _torch_decode_model(*a)
                conn.send(("ok", None))
            elif op == "decode":
                name, prompts, n = a
                calls[name] = _torch_decode_call(decode_model, prompts, n)
                conn.send(("ok", None))
            elif op == "run":
                t = time.perf_counter()
                calls[a[0]]()
                conn.send(("ok", time.perf_counter() - t))
            elif op == "drop":
                calls.pop(a[0], None)
                conn.send(("ok", None))
        except Exception as e:  # report to the parent instead of dying silently
            conn.send(("error", f"{type(e).__name__}: {e}"))


class TorchSide:
    """A spawned process holding the transformers/PyTorch side; `call(name)` runs one step there and
    returns its wall time (measured in the worker, so pipe latency is excluded)."""

    def __init__(self):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_torch_worker_main, args=(child,), daemon=True)
        self._proc.start()

    def _ask(self, *msg):
        self._conn.send(msg)
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"PyTorch benchmark worker: {value}")
        return value

    def peak(self, dtype: str = "float32") -> float | None:
        """The worker's matmul peak in `dtype` on the device its steps run on."""
        return self._ask("peak", dtype)

    def device(self) -> str:
        """"cuda" or "cpu": where the worker's steps (and its peak) run."""
        if not hasattr(self, "_device"):
            self._device = self._ask("device")
        return self._device

    def build_sft(self, name: str, cfg, B: int, L: int, dtype: str, compile: bool = False) -> None:
        self._ask("sft", name, cfg, B, L, dtype, compile)

    def load_decode_model(self, hf_config: dict, state_dict: dict) -> None:
        """Send the weights once; `build_decode` calls then only send prompts."""
        self._ask("decode_model", hf_config, state_dict)

    def build_decode(self, name: str, prompts, new_tokens: int) -> None:
        self._ask("decode", name, prompts, new_tokens)

    def run(self, name: str) -> float:
        return self._ask("run", name)

    def drop(self, name: str) -> None:
        self._ask("drop", name)

    def close(self) -> None:
        try:
            self._ask("close")
        finally:
            self._proc.join(timeout=30)


def _have_torch(args) -> bool:
    if getattr(args, "no_torch", False):
        return False
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------

def bench_sft(args, cfg0, peak: float, torch_peak: float | None, torch_side: "TorchSide | None" = None
              ) -> list[dict]:
    """MFU of each dtype's rows is against that dtype's own matmul peak, measured for each framework
    on the device its step runs on (on CPUs with AMX, PyTorch's bf16 matmul is several times its
    float32 one; on a GPU the bf16 peak is several times the float32/TF32 one)."""
    import jax

    from jaxtool.ops import attention

    accel = jax.devices()[0].platform != "cpu"
    rows = []
    peaks = {"float32": (peak, torch_peak)}  # measured by `run`; other dtypes here, once each
    for di, dtype in enumerate(args.dtypes.split(",")):
        if dtype not in peaks:
            peaks[dtype] = (measure_matmul_peak(dtype), torch_side.peak(dtype) if torch_side is not None else None)
            tp = f"{peaks[dtype][1] / 1e9:.0f}" if peaks[dtype][1] else "n/a"
            print(f"  measured matmul peak ({dtype}): JAX {peaks[dtype][0] / 1e9:.0f} GFLOP/s on "
                  f"{jax.devices()[0].platform}, PyTorch {tp} GFLOP/s", flush=True)
        peak, torch_peak = peaks[dtype]
        grid = _grid(args.grid, accel)
        if di > 0 and not accel and not getattr(args, "full_grid", False):
            grid = grid[:1]
        for B, L in grid:
            cfg = cfg0
            # random rows are one full-length example each: no packed segments (fused kernels apply)
            run = bench_run_options(args, dtype)
            attention.reset_resolutions()
            if getattr(args, "torch_only", False):  # the PyTorch side alone (launch/gpu_session.sh runs it after ours)
                ours, tokens = None, B * L
            else:
                ours, tokens = _jax_sft_step(cfg, B, L, run=run)
            # --nnx: the same step through the Flax NNX module, a third side of the same A/B rounds
            module = _nnx_sft_step(cfg, B, L, run=run)[0] if getattr(args, "nnx", False) and ours else None
            timer = _Timer()
            theirs = None
            if torch_side is not None:
                name = f"sft-{dtype}-{B}x{L}"
                try:
                    torch_side.build_sft(name, cfg, B, L, dtype, getattr(args, "torch_compile", False))
                    theirs = lambda name=name: torch_side.run(name)  # noqa: E731
                except RuntimeError as e:  # e.g. out of memory on the PyTorch side: report, keep ours
                    print(f"  PyTorch side unavailable at {B}x{L}: {e}", flush=True)
            # A/B rounds: each side runs two steps per round and only the second is timed. The first
            # step after the other framework ran is a switch step: on the 2-core CPU ours took
            # 18.5 s there instead of 12.6 s (and its next step 12.7 s), whether torch ran in this
            # process or in its worker, so timing it would measure the switch, not the step.
            if ours:
                timer.run("ours", ours)  # warm-up round (compilation)
            if module:
                timer.run("nnx", module)
            if theirs:
                timer.run("theirs", theirs)
            for _ in range(args.repeats):
                for side, fn in (("ours", ours), ("nnx", module), ("theirs", theirs)):
                    if fn:
                        timer.switch(side, fn)
                        timer.run(side, fn)
            t_ours = timer.median("ours") if ours else float("nan")
            t_theirs = timer.median("theirs") if theirs else float("nan")
            flops = cfg.flops_per_token(L) * tokens
            row = {"section": "sft", "dtype": dtype, "batch": B, "length": L, "tokens": tokens,
                   **_kernel_fields(run), "torch_compile": bool(getattr(args, "torch_compile", False)),
                   "ours_s": t_ours, "theirs_s": t_theirs, "ours_tok_s": tokens / t_ours,
                   "theirs_tok_s": tokens / t_theirs if theirs else float("nan"),
                   "speedup": t_theirs / t_ours if theirs else float("nan"),
                   "ours_mfu": flops / t_ours / peak, "theirs_mfu": (flops / t_theirs / torch_peak) if theirs and torch_peak else float("nan"),
                   "compile_s": timer.first["ours"] - t_ours if ours else float("nan"), "ours_peak_flops": peak,
                   "theirs_peak_flops": torch_peak, "ours_peak_device": jax.devices()[0].platform,
                   "theirs_peak_device": torch_side.device() if torch_side is not None else None,
                   "ours_switch_step_s": _median(timer.switch_times.get("ours", [])),
                   "theirs_switch_step_s": _median(timer.switch_times.get("theirs", []))}
            if module:
                row["nnx_s"] = timer.median("nnx")
                row["nnx_over_ours"] = row["nnx_s"] / t_ours
                row["nnx_switch_step_s"] = _median(timer.switch_times.get("nnx", []))
            if accel and chip_peak(backend_info()["device"]):
                chip = chip_peak(backend_info()["device"])
                row["chip_published_peak_flops"] = chip
                row["ours_mfu_vs_chip_bf16"] = flops / t_ours / chip
                row["theirs_mfu_vs_chip_bf16"] = flops / t_theirs / chip if theirs else float("nan")
            rows.append(row)
            print(_fmt_row(row), flush=True)
            if theirs:
                torch_side.drop(name)
    return rows


def bench_dpo(args, cfg0, sft_rows: list[dict] = ()) -> list[dict]:
    """Preference steps relative to the SFT step at equal tokens, every step with the same
    `RunOptions` (`bench_run_options`: one example per row, `--remat`, `--attention`, the backend's
    compute dtype), so the ratio compares the same kernel. When the sft section already timed the SFT
    step at this shape with the same options (`sft_rows`), that time is the base and is not re-measured."""
    import jax

    from jaxtool import objectives
    from jaxtool.config import LossConfig
    from jaxtool.ops import attention

    accel = jax.devices()[0].platform != "cpu"
    rows = []
    B, L = _grid(args.grid, accel)[0]
    pairs = max(1, B // 2)  # equal tokens: `pairs` pairs × 2 sides × L = B × L
    cfg, run = cfg0, bench_run_options(args)
    same = {"compute_dtype": run.resolved_compute_dtype, "remat": run.remat, "packed": run.packed,
            "attention_requested": run.attention}
    variants = [("sft", None, None), ("diatool_dpo", "precomputed", "diatool_dpo (ref precomputed)"),
                ("diatool_dpo", "online", "diatool_dpo (ref on the fly)"), ("dpo", "precomputed", "dpo (ref precomputed)")]
    done = next((r for r in sft_rows if r.get("section") == "sft" and (r["batch"], r["length"]) == (B, L)
                 and all(r.get(k) == v for k, v in same.items())), None)
    if done is not None:
        variants = variants[1:]
    calls, kernels = {}, {}
    for loss, ref, label in variants:
        hp = {k: v for k, v in dict(beta=0.5, gamma=0.5, margin=2.0).items() if k in objectives.hparam_fields(loss)}
        lc = LossConfig(type=loss, params=objectives.make_hparams(loss, hp))
        name = label or "sft"
        calls[name] = _jax_sft_step(cfg, B if loss == "sft" else pairs, L, lc=lc, reference=ref, run=run)[0]
    timer = _Timer()
    for name, call in calls.items():  # warm-up round: compiles, and the kernel is chosen while tracing
        attention.reset_resolutions()
        timer.run(name, call)
        kernels[name] = _kernel_fields(run)
    for _ in range(args.repeats):
        for name, call in calls.items():
            timer.run(name, call)
    base = done["ours_s"] if done is not None else timer.median("sft")
    if done is not None:
        kernels = {"sft": {k: done.get(k) for k in ("compute_dtype", "remat", "packed", "attention_requested",
                                                     "attention")}, **kernels}
    times = {"sft": base, **{name: timer.median(name) for name in calls}}
    print(f"  every step: {run.resolved_compute_dtype} compute, remat {run.remat}, one example per row, "
          f"attention {run.attention}", flush=True)
    for name, t in times.items():
        row = {"section": "dpo", "variant": name, "tokens": B * L, "step_s": t, "relative_to_sft": t / base,
               **kernels[name]}
        rows.append(row)
        print(f"  {name:34s} {t:8.2f}s/step  ×{t / base:.2f} of the SFT step at equal tokens ({B * L} tokens); "
              f"attention {row['attention']}", flush=True)
    return rows


def bench_decode(args, cfg0, torch_side: "TorchSide | None" = None) -> list[dict]:
    import jax
    import numpy as np

    from jaxtool.models import family_of
    from jaxtool.models.run import DEFAULT_RUN
    from jaxtool.ops import attention
    from jaxtool.sample.generate import Sampling, generate_ids

    cfg = cfg0
    # `generate_ids` without `run`, as eval/MCTS/buffer call it: the backend's default compute dtype
    print(f"  compute {DEFAULT_RUN.resolved_compute_dtype} (the backend default), attention {DEFAULT_RUN.attention}",
          flush=True)
    params = family_of(cfg).init_params(cfg, jax.random.key(0))
    N = args.new_tokens
    rng = np.random.RandomState(0)
    rows = []
    theirs_on = torch_side is not None and jax.devices()[0].platform == "cpu"
    if theirs_on:
        from jaxtool.convert import params_to_state_dict

        hf_config = {k: v for k, v in cfg.to_hf("float32").items() if k not in ("architectures", "torch_dtype")}
        torch_side.load_decode_model(hf_config, {k: np.asarray(v) for k, v in
                                                 params_to_state_dict(params, cfg, "float32").items()})
    for B in [int(b) for b in args.decode_batches.split(",")]:
        prompts = [rng.randint(3, cfg.vocab_size, 64).tolist() for _ in range(B)]
        timer = _Timer()

        def ours():
            generate_ids(params, cfg, prompts, max_new_tokens=N, sampling=Sampling(), stop_ids=[], chunk=N)

        if theirs_on:
            torch_side.build_decode(f"decode-{B}", prompts, N)

        def theirs(B=B):
            return torch_side.run(f"decode-{B}")

        attention.reset_resolutions()
        for _ in range(2):  # warm-up + one measured run each (decoding is long and steady)
            timer.run("ours", ours)
            if theirs_on:
                timer.run("theirs", theirs)
        if theirs_on:
            torch_side.drop(f"decode-{B}")
        t_o = timer.median("ours")
        t_t = timer.median("theirs") if theirs_on else float("nan")
        row = {"section": "decode", "batch": B, "new_tokens": N, "ours_tok_s": B * N / t_o,
               "theirs_tok_s": B * N / t_t, "speedup": t_t / t_o, "ours_s": t_o, "theirs_s": t_t,
               "compute_dtype": DEFAULT_RUN.resolved_compute_dtype, "attention": attention.describe_resolutions()}
        rows.append(row)
        print(f"  batch {B:3d}: ours {row['ours_tok_s']:8.1f} new tok/s   transformers {row['theirs_tok_s']:8.1f}   "
              f"×{row['speedup']:.2f}", flush=True)
    return rows


def bench_scaling(args, cfg0) -> list[dict]:
    from jaxtool.models.run import RunOptions
    import jax
    import jax.numpy as jnp

    from jaxtool.config import LossConfig, OptimConfig
    from jaxtool.models import family_of
    from jaxtool.train import steps
    from jaxtool.train.optim import make_optimizer

    rows = []
    opt, _ = make_optimizer(OptimConfig(lr=1e-5), 1000)
    lc = LossConfig(type="sft")
    small = cfg0.replace(num_layers=4)

    def compiled_step(cfg, B, L, run):
        params = jax.eval_shape(lambda: family_of(cfg).init_params(cfg, jax.random.key(0)))
        state = jax.eval_shape(lambda p: steps.TrainState(jnp.zeros((), jnp.int32), p, opt.init(p)), params)
        batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _random_batch(B, L, cfg.vocab_size))
        f = steps.make_train_step(cfg, lc, opt, run=run)
        t = time.perf_counter()
        c = f.lower(state, batch).compile()
        return c, time.perf_counter() - t

    # memory (XLA's buffer assignment: temporaries + arguments) and time vs length / batch / remat
    for remat in ("none", "full"):
        for B, L in _grid(args.scaling_grid, False):
            cfg, run = small, RunOptions(remat=remat)
            c, ct = compiled_step(cfg, B, L, run)
            mem = c.memory_analysis()
            temp = getattr(mem, "temp_size_in_bytes", float("nan"))
            call, _ = _jax_sft_step(cfg, B, L, run=run)
            call()
            ts = []
            for _ in range(2):
                t = time.perf_counter()
                call()
                ts.append(time.perf_counter() - t)
            row = {"section": "scaling", "kind": "memory_time", "layers": cfg.num_layers, "remat": remat, "batch": B,
                   "length": L, "step_s": min(ts), "temp_mb": temp / 2 ** 20}
            rows.append(row)
            print(f"  remat={remat:4s} {B}×{L:5d}: step {row['step_s']:6.2f}s  temporaries {row['temp_mb']:8.1f} MiB",
                  flush=True)
    # compile time vs depth, scanned vs unrolled layers
    for layers in [int(n) for n in args.scaling_layers.split(",")]:
        for scan in (True, False):
            cfg = cfg0.replace(num_layers=layers)
            _, ct = compiled_step(cfg, 1, 128, RunOptions(scan_layers=scan))
            rows.append({"section": "scaling", "kind": "compile", "layers": layers, "scan": scan, "compile_s": ct})
            print(f"  compile, {layers:2d} layers, {'scanned' if scan else 'unrolled':8s}: {ct:6.1f}s", flush=True)
    return rows


# --------------------------------------------------------------------------------------------
# one GPU, two sides one after the other (launch/gpu_session.sh)
# --------------------------------------------------------------------------------------------

def memory_fraction(need_gib: float, card_gib: float, headroom_gib: float = 6.0, floor: float = 0.5,
                    ceiling: float = 0.95) -> tuple[float, bool]:
    """`XLA_PYTHON_CLIENT_MEM_FRACTION` for a step that needs `need_gib` (XLA's arguments +
    temporaries, from launch/gpu_memory_check.py) on a card of `card_gib`: need + `headroom_gib`
    (CUDA context, cuDNN workspaces, allocator fragmentation) of the card, at least `floor`, at most
    `ceiling`. Returns (fraction, fits): `fits` is False when need + headroom exceeds the ceiling
    (then run with more remat or a smaller batch). The PyTorch side runs afterwards in its own
    process, so JAX does not share the card with it."""
    if card_gib <= 0:
        raise ValueError(f"card memory must be positive, got {card_gib} GiB")
    want = (need_gib + headroom_gib) / card_gib
    return round(min(ceiling, max(floor, want)), 3), want <= ceiling


def session_memory_fraction(mem_json: str | None, card_mib: float) -> str:
    """`FRACTION FITS NEED_GIB CARD_GIB` for launch/gpu_session.sh: the need from the first row of
    gpu_memory_check.py's JSON (temporaries + arguments + outputs), or 0.75 of the card when that
    file is missing."""
    card = float(card_mib) / 1024
    need = None
    if mem_json and os.path.isfile(mem_json):
        with open(mem_json) as fh:
            r = json.load(fh)[0]
        need = r["temp_gib"] + r["argument_gib"] + r.get("output_gib", 0.0)
    if need is None:
        return f"0.75 unknown nan {card:.1f}"
    frac, fits = memory_fraction(need, card)
    return f"{frac} {'yes' if fits else 'no'} {need:.1f} {card:.1f}"


def merge_sides(ours_dir: str, theirs_dir: str, out: str) -> list[dict]:
    """Join the sft rows of a JAX-only run (`--no-torch`) and a PyTorch-only run (`--torch-only`) of
    the same grid into one bench.json / bench.md in `out` (ratios recomputed)."""
    with open(os.path.join(ours_dir, "bench.json")) as fh:
        ours = json.load(fh)
    with open(os.path.join(theirs_dir, "bench.json")) as fh:
        theirs = json.load(fh)
    key = lambda r: (r["dtype"], r["batch"], r["length"])  # noqa: E731
    their_rows = {key(r): r for r in theirs["rows"] if r["section"] == "sft"}
    rows = []
    for r in ours["rows"]:
        t = their_rows.get(key(r)) if r["section"] == "sft" else None
        if t is not None:
            r = {**r, **{k: t[k] for k in ("theirs_s", "theirs_tok_s", "theirs_mfu", "theirs_peak_flops",
                                             "theirs_peak_device", "torch_compile") if k in t}}
            if "theirs_mfu_vs_chip_bf16" in t:
                r["theirs_mfu_vs_chip_bf16"] = t["theirs_mfu_vs_chip_bf16"]
            r["speedup"] = r["theirs_s"] / r["ours_s"]
        rows.append(r)
    table = _table(rows)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "bench.json"), "w") as fh:
        json.dump({**ours, "rows": rows, "torch_matmul_peak_flops": theirs.get("torch_matmul_peak_flops"),
                   "sides": {"ours": ours_dir, "theirs": theirs_dir}}, fh, indent=2, default=str)
    with open(os.path.join(out, "bench.md"), "w") as fh:
        fh.write(table + "\n")
    print(table)
    return rows


def _fmt_row(r: dict) -> str:
    theirs = f"{r['theirs_tok_s']:8.1f}" if r["theirs_tok_s"] == r["theirs_tok_s"] else "     n/a"
    chip = (f" (vs chip bf16 peak: ours {r['ours_mfu_vs_chip_bf16']:.3f}, theirs {r['theirs_mfu_vs_chip_bf16']:.3f})"
            if "ours_mfu_vs_chip_bf16" in r else "")
    nnx = (f"\n           nnx module step {r['nnx_s']:.3f}s vs ours {r['ours_s']:.3f}s: module/pure = "
           f"{r['nnx_over_ours']:.3f}" if "nnx_s" in r else "")
    return (f"  {r['dtype']:8s} {r['batch']}×{r['length']:<5d} ours {r['ours_tok_s']:8.1f} tok/s  transformers {theirs} "
            f"tok/s  ×{r['speedup']:.2f}   MFU ours {r['ours_mfu']:.2f}{chip}"
            f"   (switch step: ours {r.get('ours_switch_step_s', float('nan')):.1f}s, "
            f"theirs {r.get('theirs_switch_step_s', float('nan')):.1f}s){nnx}")


def _table(rows: list[dict]) -> str:
    from jaxtool.eval.report import markdown_table

    out = []
    sft = [r for r in rows if r["section"] == "sft"]
    if sft:
        out.append(markdown_table(
            ["SFT step", "attention", "ours tok/s", "transformers tok/s", "ratio", "ours MFU (own peak)",
             "transformers MFU (own peak)", "ours MFU (chip bf16 peak)"],
            [[f"{r['dtype']} {r['batch']}×{r['length']}", r.get("attention", ""), r["ours_tok_s"], r["theirs_tok_s"],
              r["speedup"], r["ours_mfu"], r["theirs_mfu"], r.get("ours_mfu_vs_chip_bf16", float("nan"))]
             for r in sft]))
        nnx = [r for r in sft if "nnx_s" in r]
        if nnx:
            out.append(markdown_table(
                ["SFT step (--nnx)", "pure step s", "NNX module step s", "module / pure"],
                [[f"{r['dtype']} {r['batch']}×{r['length']}", r["ours_s"], r["nnx_s"], r["nnx_over_ours"]]
                 for r in nnx]))
    dpo = [r for r in rows if r["section"] == "dpo"]
    if dpo:
        out.append(markdown_table(["preference step (equal tokens)", "s/step", "× SFT step", "attention"],
                                  [[r["variant"], r["step_s"], r["relative_to_sft"], r.get("attention", "")]
                                   for r in dpo]))
    dec = [r for r in rows if r["section"] == "decode"]
    if dec:
        out.append(markdown_table(["greedy decode", "ours new tok/s", "transformers new tok/s", "ratio"],
                                  [[f"batch {r['batch']}", r["ours_tok_s"], r["theirs_tok_s"], r["speedup"]] for r in dec]))
    mem = [r for r in rows if r.get("kind") == "memory_time"]
    if mem:
        out.append(markdown_table(["scaling (4-layer slice)", "remat", "step s", "temporaries MiB"],
                                  [[f"{r['batch']}×{r['length']}", r["remat"], r["step_s"], r["temp_mb"]] for r in mem]))
    comp = [r for r in rows if r.get("kind") == "compile"]
    if comp:
        layers = sorted({r["layers"] for r in comp})
        get = lambda n, s: next(r["compile_s"] for r in comp if r["layers"] == n and r["scan"] == s)  # noqa: E731
        out.append(markdown_table(["compile time", "scanned s", "unrolled s"],
                                  [[f"{n} layers", get(n, True), get(n, False)] for n in layers]))
    return "\n\n".join(out)


def _chart(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [s for s in ("sft", "decode") if any(r["section"] == s for r in rows)]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 3.6), squeeze=False)
    for ax, sec in zip(axes[0], panels):
        rs = [r for r in rows if r["section"] == sec]
        labels = [f"{r.get('dtype', '')} {r['batch']}×{r.get('length', r.get('new_tokens'))}".strip() for r in rs]
        x = range(len(rs))
        ax.bar([i - 0.2 for i in x], [r["ours_tok_s"] for r in rs], 0.4, label="jaxtool")
        ax.bar([i + 0.2 for i in x], [r["theirs_tok_s"] for r in rs], 0.4, label="transformers")
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels, rotation=20, fontsize=8)
        ax.set_title("SFT step tokens/s" if sec == "sft" else "greedy decode new tokens/s")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args) -> int:
    from jaxtool.models import preset

    t0 = time.time()
    cfg = preset(args.shape)
    info = backend_info()
    sections = SECTIONS if args.section == "all" else (args.section,)
    print(f"jaxtool bench {args.section}: {args.shape} shape ({cfg.num_params() / 1e6:.0f}M params, random weights) "
          f"on {info['platform']} ({info['device']}, {info['cores']} cores)", flush=True)
    peak = measure_matmul_peak()
    # the PyTorch side lives in its own process (TorchSide); only the CPU comparison uses it
    # (on CUDA its sft steps run on the GPU: fp32 weights + bf16 autocast + SDPA + fused AdamW)
    torch_side = TorchSide() if _have_torch(args) and (
        "sft" in sections or ("decode" in sections and info["platform"] == "cpu")) else None
    try:
        return _run_sections(args, cfg, sections, info, peak, torch_side, t0)
    finally:
        if torch_side is not None:
            torch_side.close()


def _run_sections(args, cfg, sections, info, peak, torch_side, t0) -> int:
    torch_peak = torch_side.peak() if torch_side else None
    tp = f"{torch_peak / 1e9:.0f}" if torch_peak else "n/a"
    import jax

    td = f" on {torch_side.device()}" if torch_side else ""
    print(f"measured matmul peak (float32): JAX {peak / 1e9:.0f} GFLOP/s on {jax.devices()[0].platform}, "
          f"PyTorch {tp} GFLOP/s{td}", flush=True)
    chip = chip_peak(info["device"]) if info["platform"] != "cpu" else None
    if chip:
        print(f"published bf16 peak of {info['device']}: {chip / 1e12:.0f} TFLOP/s (second MFU column)", flush=True)
    run0 = bench_run_options(args)
    print(f"our steps: remat {run0.remat}, attention {run0.attention} (the kernel that ran is in each row), "
          f"one example per row; default compute dtype here {run0.resolved_compute_dtype}", flush=True)
    rows: list[dict] = []
    if "sft" in sections:
        print("\n[sft] one training step (forward + backward + AdamW); A/B rounds, median of "
              f"{args.repeats}; each timed step follows an untimed step of the same side", flush=True)
        rows += bench_sft(args, cfg, peak, torch_peak, torch_side)
    if "dpo" in sections:
        print("\n[dpo] preference step vs SFT step at equal tokens", flush=True)
        rows += bench_dpo(args, cfg, rows)
    if "decode" in sections:
        print(f"\n[decode] greedy, {args.new_tokens} new tokens, 64-token prompts", flush=True)
        rows += bench_decode(args, cfg, torch_side if info["platform"] == "cpu" else None)
    if "scaling" in sections:
        print("\n[scaling] 4-layer slice of the shape; compile time vs depth", flush=True)
        rows += bench_scaling(args, cfg)
    table = _table(rows)
    print("\n" + table)
    os.makedirs(args.out, exist_ok=True)
    result = {"backend": info, "shape": args.shape, "matmul_peak_flops": peak, "torch_matmul_peak_flops": torch_peak,
              "rows": rows, "wall_s": time.time() - t0, "args": {k: v for k, v in vars(args).items() if k != "func"}}
    with open(os.path.join(args.out, "bench.json"), "w") as fh:
        json.dump(result, fh, indent=2, default=str)
    with open(os.path.join(args.out, "bench.md"), "w") as fh:
        fh.write(table + "\n")
    _chart(rows, os.path.join(args.out, "bench.png"))
    print(f"\nwrote {args.out}/bench.json, bench.md, bench.png in {time.time() - t0:.0f}s")
    return 0


__all__ = ["run", "measure_matmul_peak", "measure_torch_matmul_peak", "bench_run_options", "chip_peak",
           "PUBLISHED_PEAKS", "SECTIONS"]
