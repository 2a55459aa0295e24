"""`jaxtool convert {hf-to-orbax,orbax-to-hf,gguf-to-orbax}`: move models between formats."""

from __future__ import annotations

import argparse
import time

DESCRIPTION = """Convert models between Hugging Face, GGUF and jaxtool (Orbax) checkpoints.

  hf-to-orbax   HF directory (config.json + safetensors)   -> jaxtool checkpoint
  orbax-to-hf   jaxtool checkpoint (model or training run) -> HF directory
  gguf-to-orbax Llama .gguf file (or "smollm2")            -> jaxtool checkpoint

HF directories written here load with transformers' AutoModelForCausalLM.from_pretrained and
serve with vLLM, no custom code."""


def register(sub) -> None:
    p = sub.add_parser("convert", help="convert between HF, GGUF and jaxtool checkpoints",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)

    a = kinds.add_parser("hf-to-orbax", help="HF directory -> jaxtool checkpoint")
    a.add_argument("--hf", required=True, metavar="DIR", help="HF model directory")
    a.add_argument("--out", required=True, metavar="DIR", help="output checkpoint directory")
    a.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="stored parameter dtype")
    a.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    a.set_defaults(func=_run)

    b = kinds.add_parser("orbax-to-hf", help="jaxtool checkpoint -> HF directory")
    b.add_argument("--ckpt", required=True, metavar="DIR",
                   help="jaxtool checkpoint directory (a model, or a run's checkpoints/ dir: latest step)")
    b.add_argument("--out", required=True, metavar="DIR", help="output HF directory")
    b.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    b.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="safetensors dtype (default: the dtype of the model it was converted from)")
    b.add_argument("--max-shard-gb", type=float, default=2.0, help="safetensors shard size")
    b.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    b.add_argument("--require-manifest", action="store_true",
                   help="refuse a checkpoint step without an integrity manifest (default: warn and export it)")
    b.set_defaults(func=_run)

    c = kinds.add_parser("gguf-to-orbax", help="Llama .gguf -> jaxtool checkpoint")
    c.add_argument("--gguf", required=True, metavar="FILE",
                   help='.gguf file, or "smollm2" for the embedded SmolLM2-135M-Instruct')
    c.add_argument("--out", required=True, metavar="DIR", help="output checkpoint directory")
    c.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="stored parameter dtype")
    c.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    c.set_defaults(func=_run)


def _run(args) -> int:
    from jaxtool.api import load_model

    t0 = time.time()
    if args.kind == "hf-to-orbax":
        model = load_model(args.hf, dtype=args.dtype)
        model.save(args.out, overwrite=args.overwrite)
    elif args.kind == "gguf-to-orbax":
        model = load_model(args.gguf, dtype=args.dtype)
        model.save(args.out, overwrite=args.overwrite)
    else:
        if args.require_manifest:
            import os

            from jaxtool.checkpoint import REQUIRE_MANIFEST_ENV

            os.environ[REQUIRE_MANIFEST_ENV] = "1"
        model = load_model(args.ckpt, step=args.step)
        model.save_hf(args.out, dtype=args.dtype, overwrite=args.overwrite,
                      max_shard_bytes=int(args.max_shard_gb * 1024 ** 3))
    print(f"{model}\nwrote {args.out} in {time.time() - t0:.1f}s")
    return 0
