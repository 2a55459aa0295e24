"""Bad-input probes of jaxtool's public entry points (the CLI's `main` in-process, `jaxtool.load_model`),
classified by outcome — the table of issue 17. Not part of the test suite (its file name does not
start with `test_`): it trains tiny models and takes minutes.

    python tests/probe_inputs.py --out /tmp/probes_new.json                      # this tree
    PYTHONPATH=/tmp/old python tests/probe_inputs.py --out /tmp/probes_old.json  # an older checkout

Outcomes:
  named error      a JaxtoolError / `jaxtool CMD: error: ...` with exit code 2, where an error is right
  counted skip     the bad rows were skipped and the output counts them
  correct          the input was handled as it should be (a valid fallback, a right answer)
  named, wrong     a named error where the input should have been skipped, accepted or recovered from
  raw traceback    any other exception escaped
  silent wrong     it "worked" but the result is wrong (or an error was due and none came)
  data loss        work was destroyed
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
import traceback

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "fixtures", "diatool", "seeds.jsonl")

RESULTS: list[dict] = []


# ------------------------------------------------------------------------------------------------
# harness
# ------------------------------------------------------------------------------------------------

class Out:
    def __init__(self, rc, out, err, exc, value=None):
        self.rc, self.out, self.err, self.exc, self.value = rc, out, err, exc, value

    @property
    def text(self):
        return self.out + self.err


def cli(*argv) -> Out:
    from jaxtool import cli as jcli

    logging.root.handlers.clear()
    o, e = io.StringIO(), io.StringIO()
    rc, exc = None, None
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try:
            rc = jcli.main([str(a) for a in argv])
        except SystemExit as s:
            rc = s.code if isinstance(s.code, int) else 2
        except BaseException as x:  # noqa: BLE001
            exc = x
            traceback.print_exc(file=e)
    logging.root.handlers.clear()
    return Out(rc, o.getvalue(), e.getvalue(), exc)


def api(fn) -> Out:
    logging.root.handlers.clear()
    o, e = io.StringIO(), io.StringIO()
    value, exc = None, None
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try:
            value = fn()
        except BaseException as x:  # noqa: BLE001
            exc = x
    logging.root.handlers.clear()
    return Out(0 if exc is None else None, o.getvalue(), e.getvalue(), exc, value)


def is_named(exc) -> bool:
    from jaxtool.errors import JaxtoolError

    return isinstance(exc, JaxtoolError)


def record(area, name, outcome, detail=""):
    detail = " ".join(str(detail).split())[:220]
    RESULTS.append({"area": area, "probe": name, "outcome": outcome, "detail": detail})
    print(f"[{area:11s}] {outcome:14s} {name}: {detail}", flush=True)


def classify(area, name, res: Out, expect: str, ok=None, skip_word="skipped"):
    """expect: "error" (a named error is right), "skip" (rc 0, bad rows counted), "ok" (rc 0 and
    `ok(res)` true). `ok(res)` may also return a string outcome itself."""
    if res.exc is not None and not is_named(res.exc):
        tb = res.err.strip().splitlines()
        record(area, name, "raw traceback", f"{type(res.exc).__name__}: {res.exc}" if not tb else tb[-1])
        return
    failed = res.exc is not None or res.rc == 2
    msg = str(res.exc) if res.exc is not None else res.err.strip().splitlines()[-1] if res.err.strip() else ""
    if failed and "Traceback (most recent call last)" in res.err:
        record(area, name, "raw traceback", msg)
        return
    if expect == "error":
        if failed:
            verdict = ok(res) if ok else True
            record(area, name, verdict if isinstance(verdict, str) else "named error" if verdict else "named, wrong", msg)
        else:
            record(area, name, "silent wrong", f"accepted (rc {res.rc}): {res.out.strip().splitlines()[-1:]} ")
        return
    if failed:
        record(area, name, "named, wrong", msg)
        return
    verdict = ok(res) if ok else True
    if isinstance(verdict, str):
        record(area, name, verdict, res.text.strip().splitlines()[-1:] if res.text.strip() else "")
        return
    if expect == "skip":
        good = verdict and skip_word in res.text
        record(area, name, "counted skip" if good else "silent wrong",
               [ln for ln in res.text.splitlines() if skip_word in ln][:1] or "no count of skipped rows in the output")
    else:
        record(area, name, "correct" if verdict else "silent wrong", res.text.strip().splitlines()[-1:] if res.text.strip() else "")


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------

def tiny_model(root: str) -> str:
    """An HF directory: 2-layer random Llama, 1k BPE tokenizer (built once, cached under root)."""
    d = os.path.join(root, "tiny_model")
    if os.path.isfile(os.path.join(d, "config.json")):
        return d
    sys.path.insert(0, HERE)
    import torch
    from conftest import make_tiny_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    texts = open(SEEDS, encoding="utf-8").read().splitlines()
    texts += [json.dumps(json.loads(t), ensure_ascii=False, indent=1) for t in texts]
    tok = make_tiny_tokenizer(texts)
    torch.manual_seed(0)
    hc = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                     max_position_embeddings=4096, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(hc).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def seeds() -> list[dict]:
    return [json.loads(ln) for ln in open(SEEDS, encoding="utf-8")]


def write_jsonl(path, rows):
    with open(path, "wb") as fh:
        for r in rows:
            fh.write(r if isinstance(r, bytes) else (json.dumps(r, ensure_ascii=False) + "\n").encode())
    return path


def pairs(n=8) -> list[dict]:
    out = []
    for s in seeds()[:n]:
        rej = json.loads(json.dumps(s))
        rej["messages"][-1] = {"role": "assistant", "content": "I cannot help with that."}
        out.append({"chosen": s, "rejected": rej})
    return out


# ------------------------------------------------------------------------------------------------
# probes
# ------------------------------------------------------------------------------------------------

def train_args(model, run_dir, *extra):
    return ["train", f"model.path={model}", f"run_dir={run_dir}", "progress=false", "data.format=hermes",
            "data.max_length=512", "data.bucket_multiple=64", "batch_size=2", "max_steps=2", *extra]


def probe_config(root, model, good):
    A = "config"
    d = os.path.join(root, "cfg")
    os.makedirs(d, exist_ok=True)

    def pc(*extra):
        return cli("train", "--print-config", *extra)

    p = os.path.join(d, "latin1.yaml")
    open(p, "wb").write(b"run_dir: caf\xe9\n")
    classify(A, "non-UTF-8 YAML recipe", pc(p), "error")
    p = os.path.join(d, "self.yaml")
    open(p, "w").write("base: self.yaml\nseed: 1\n")
    classify(A, "base: itself", pc(p), "error")
    p = os.path.join(d, "list.yaml")
    open(p, "w").write("base: [a.yaml, b.yaml]\n")
    classify(A, "base: a list", pc(p), "error")
    p = os.path.join(d, "top.yaml")
    open(p, "w").write("- 1\n- 2\n")
    classify(A, "YAML top level a list", pc(p), "error")
    p = os.path.join(d, "syntax.yaml")
    open(p, "w").write("optim: {lr: [1\n")
    classify(A, "YAML syntax error", pc(p), "error")
    classify(A, "missing recipe file", pc(os.path.join(d, "nope.yaml")), "error")
    for ov in ("optim.lr=[1e-3", "optim.lr={a", "optim.lr=*anchor", "seed=!!python/object/apply:os.system ['true']",
               "seed=1e400", "batch_size=abc", "batch_size=0", "data.on_bad_row=maybe", "loss.type=nope",
               "mesh.data=0", "optim.lr=-1", "optim.lr=inf", "keep=-1", "noequals"):
        classify(A, f"override {ov}", pc(ov), "error")
    r = pc("optim.learning_rat=1e-4")
    classify(A, "typo optim.learning_rat", r, "error", ok=lambda r: "'optim.lr'" in r.err)
    r = pc("lr=1e-4")
    classify(A, "key in the wrong section (lr)", r, "error", ok=lambda r: "optim.lr" in r.err)

    # values the config accepted before and that failed (or did harm) only in training
    def run_probe(name, extra, expect="error", ok=None):
        rd = os.path.join(root, "runs", name.replace(" ", "_").replace("=", "_").replace(".", "_"))
        shutil.rmtree(rd, ignore_errors=True)
        classify(A, name, cli(*train_args(model, rd, f"data.train=conversations:{good}", *extra)), expect, ok)
        return rd

    run_probe("optim.grad_accum=0", ["optim.grad_accum=0"])
    run_probe("lora.rank=0", ["lora.enabled=true", "lora.rank=0"])
    run_probe("data.limit=-5", ["data.limit=-5"], ok=lambda r: "data.limit" in r.err)
    run_probe("epochs=0", ["epochs=0", "max_steps=0"], ok=lambda r: "epochs" in r.err and "num_epochs" not in r.err)
    run_probe("max_steps=-1", ["max_steps=-1"])
    run_probe("optim.warmup_ratio=2", ["optim.warmup_ratio=2"])
    run_probe("optim.lr=nan", ["optim.lr=nan"])
    rd = os.path.join(root, "runs", "keep0")
    shutil.rmtree(rd, ignore_errors=True)
    res = cli(*train_args(model, rd, f"data.train=conversations:{good}", "keep=0", "save_every=1"))
    steps = [s for s in os.listdir(os.path.join(rd, "checkpoints"))
             if s.isdigit()] if os.path.isdir(os.path.join(rd, "checkpoints")) else []
    if res.rc == 0 and not steps:
        record(A, "keep=0 save_every=1", "data loss", "exit 0, 'saved checkpoint' printed, checkpoints/ holds no step")
    else:
        classify(A, "keep=0 save_every=1", res, "error")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        res = cli(*train_args(model, "x", f"data.train=conversations:{good}", "run_dir=null"))
        made_none = os.path.isdir(os.path.join(root, "None"))
    finally:
        os.chdir(cwd)
    if made_none:
        record(A, "run_dir=null", "silent wrong", "created a directory named 'None'")
    else:
        classify(A, "run_dir=null", res, "error")
    rd = os.path.join(root, "runs", "save_every_neg")
    shutil.rmtree(rd, ignore_errors=True)
    classify(A, "save_every=-1", cli(*train_args(model, rd, f"data.train=conversations:{good}", "save_every=-1")), "error")


def probe_data(root, model, good):
    A = "data"
    d = os.path.join(root, "data")
    os.makedirs(d, exist_ok=True)
    conv = seeds()[0]
    line = (json.dumps(conv, ensure_ascii=False) + "\n").encode()
    bad_utf8 = line.replace(b"Paris", b"Par\xffis", 1)
    f_utf8 = write_jsonl(os.path.join(d, "utf8.jsonl"), [line, bad_utf8, line])
    tok = ["--tokenizer", model, "--format", "hermes"]

    def inspect(path, mode, *extra):
        return cli("data", "inspect", f"conversations:{path}", *tok, "--on-bad-row", mode, *extra)

    classify(A, "non-UTF-8 row, inspect, error mode", inspect(f_utf8, "error"), "error")
    classify(A, "non-UTF-8 row, inspect, skip mode", inspect(f_utf8, "skip"), "skip")
    f = write_jsonl(os.path.join(d, "badjson.jsonl"), [line, b'{"messages": [\n', line])
    classify(A, "invalid JSON line, skip", inspect(f, "skip"), "skip")
    classify(A, "invalid JSON line, error", inspect(f, "error"), "error")
    f = write_jsonl(os.path.join(d, "list.jsonl"), [line, [1, 2], "text", 5, None])
    classify(A, "rows that are not objects, skip", inspect(f, "skip"), "skip")
    no_msgs = dict(conv)
    no_msgs.pop("messages")
    f = write_jsonl(os.path.join(d, "nomsg.jsonl"), [no_msgs])
    classify(A, "row without messages, error", inspect(f, "error"), "error", ok=lambda r: "messages" in r.err)
    f = write_jsonl(os.path.join(d, "empty.jsonl"), [])
    classify(A, "empty file", inspect(f, "skip"), "ok", ok=lambda r: "0 rows read" in r.text)
    f = write_jsonl(os.path.join(d, "bigint.jsonl"), [line, ('{"messages": ' + "9" * 5000 + "}\n").encode()])
    classify(A, "5000-digit integer, skip", inspect(f, "skip"), "skip")
    f = write_jsonl(os.path.join(d, "deep.jsonl"), [line, ("[" * 100000 + "]" * 100000 + "\n").encode()])
    classify(A, "100000-deep nesting, skip", inspect(f, "skip"), "skip")
    f = write_jsonl(os.path.join(d, "bom.jsonl"), [b"\xef\xbb\xbf" + line])
    classify(A, "UTF-8 BOM", inspect(f, "error"), "ok")
    p = os.path.join(d, "latin1.json")
    open(p, "wb").write(b"[" + line.strip() + b", " + bad_utf8.strip() + b"]")
    classify(A, "non-UTF-8 record in a .json file, skip", inspect(p, "skip"), "skip")
    bad_role = json.loads(json.dumps(conv))
    bad_role["messages"][0]["role"] = "wizard"
    f = write_jsonl(os.path.join(d, "role.jsonl"), [bad_role])
    classify(A, "unknown role, error", inspect(f, "error"), "error", ok=lambda r: "role" in r.err)
    bad_args = json.loads(json.dumps(conv))
    bad_args["messages"][1]["tool_calls"][0]["function"]["arguments"] = "{not json"
    f = write_jsonl(os.path.join(d, "args.jsonl"), [bad_args])
    classify(A, "call arguments not JSON, error", inspect(f, "error"), "error",
             ok=lambda r: "named, wrong" if "at at" in r.err else True)
    unterminated = line.replace(b'"What', b'"What\\', 1)[:40] + b"\n"
    f = write_jsonl(os.path.join(d, "unterm.jsonl"), [unterminated])
    classify(A, "unterminated string, error (message wording)", inspect(f, "error"), "error",
             ok=lambda r: "named, wrong" if "at at char" in r.err else True)

    # training with bad rows
    def train(name, data, *extra, expect="skip", ok=None):
        rd = os.path.join(root, "runs", "data_" + name.replace(" ", "_").replace(",", ""))
        shutil.rmtree(rd, ignore_errors=True)
        classify(A, name, cli(*train_args(model, rd, f"data.train={data}", *extra)), expect, ok)

    f = write_jsonl(os.path.join(d, "train_utf8.jsonl"), [line, bad_utf8] + [(json.dumps(s) + "\n").encode()
                                                                             for s in seeds()[1:6]])
    train("train non-UTF-8 row, skip", f"conversations:{f}", "data.on_bad_row=skip")
    train("train non-UTF-8 row, error", f"conversations:{f}", expect="error")
    f = write_jsonl(os.path.join(d, "train_badrows.jsonl"), [b"{oops\n", [1], line, line, line])
    train("train bad rows, skip: load report", f"conversations:{f}", "data.on_bad_row=skip")
    f = write_jsonl(os.path.join(d, "train_allbad.jsonl"), [b"{oops\n", [1], b"nope\n"])
    train("train every row bad, skip", f"conversations:{f}", "data.on_bad_row=skip", expect="error",
          ok=lambda r: "skipped" in r.text)
    prefs = pairs(6)
    rows = [prefs[0], {"chosen": prefs[1]["chosen"]}, b"{broken\n"] + prefs[2:]
    f = write_jsonl(os.path.join(d, "pref_bad.jsonl"), rows)
    train("preference bad rows, skip", f, "data.kind=preference", "loss.type=dpo", "data.on_bad_row=skip")
    r = cli(*train_args(model, os.path.join(root, "runs", "pref_err"), f"data.train={f}", "data.kind=preference",
                        "loss.type=dpo"))
    classify(A, "preference bad row, error: numbering as SFT (row 1)", r, "error",
             ok=lambda r: "row 1" in r.err and "line" not in r.err.split("row 1")[0][-30:])

    # resume with other data / batch size, torn metrics
    rd = os.path.join(root, "runs", "resume")
    shutil.rmtree(rd, ignore_errors=True)
    base = train_args(model, rd, f"data.train=conversations:{good}", "save_every=1", "epochs=3", "max_steps=3")
    first = cli(*base)
    if first.rc != 0:
        record(A, "resume probes: base run", "named, wrong", first.err.strip().splitlines()[-1:])
        return
    other = write_jsonl(os.path.join(d, "other.jsonl"), [(json.dumps(s) + "\n").encode() for s in seeds()[10:14]])
    classify(A, "resume with different data", cli(*train_args(model, rd, f"data.train=conversations:{other}",
                                                               "max_steps=4"), "--resume"), "error")
    classify(A, "resume with different batch_size",
             cli(*[a if a != "batch_size=2" else "batch_size=1" for a in base[:-1]], "max_steps=4", "--resume"), "error")
    mpath = os.path.join(rd, "metrics.jsonl")
    with open(mpath, "a") as fh:
        fh.write('{"split": "train", "step": 4, "loss": 1.2')
    r = cli(*base[:-1], "max_steps=4", "--resume")
    classify(A, "torn last line of metrics.jsonl, resume", r, "ok",
             ok=lambda r: "finished after 4 steps" in r.out)
    rows = [json.loads(x) for x in open(mpath) if x.strip()] if r.rc == 0 else []
    if r.rc == 0:
        record(A, "metrics.jsonl after resume is valid JSON, steps 1..4", "correct"
               if [x["step"] for x in rows if x.get("split") == "train"] == [1, 2, 3, 4] else "silent wrong",
               [x.get("step") for x in rows])
    r = cli(*base[:-1], "max_steps=4", "--resume")
    classify(A, "resume a finished run", r, "ok", ok=lambda r: "finished after 4 steps" in r.out)
    rd2 = os.path.join(root, "runs", "resume_after")
    shutil.rmtree(rd2, ignore_errors=True)
    base2 = train_args(model, rd2, f"data.train=conversations:{good}", "epochs=3", "max_steps=1")
    cli(*base2)
    r = cli("train", os.path.join(rd2, "config.yaml"), "--resume", "max_steps=2")
    classify("cli", "overrides after --resume", r, "ok", ok=lambda r: "finished after 2 steps" in r.out)
    rd3 = os.path.join(root, "runs", "lr_huge")
    shutil.rmtree(rd3, ignore_errors=True)
    r = cli(*train_args(model, rd3, f"data.train=conversations:{good}", "optim.lr=1e30", "optim.grad_clip=0",
                        "max_steps=4", "optim.schedule=constant"))
    nan_in_metrics = os.path.isfile(os.path.join(rd3, "metrics.jsonl")) and "NaN" in open(os.path.join(rd3, "metrics.jsonl")).read()
    if r.rc == 0:
        record("cli", "optim.lr=1e30: loss diverges", "silent wrong", "exit 0" + (", NaN in metrics.jsonl" if nan_in_metrics else ""))
    else:
        classify("cli", "optim.lr=1e30: loss diverges", r, "error", ok=lambda r: "step" in r.err)


def flip_bit(path, rng):
    data = bytearray(open(path, "rb").read())
    i = rng.randrange(len(data))
    data[i] ^= 1 << rng.randrange(8)
    open(path, "wb").write(bytes(data))


def probe_checkpoints(root, model, good):
    import numpy as np

    A = "checkpoints"
    rd = os.path.join(root, "runs", "ck")
    shutil.rmtree(rd, ignore_errors=True)
    base = train_args(model, rd, f"data.train=conversations:{good}", "save_every=1", "epochs=3", "keep=5",
                      "max_steps=3")
    r = cli(*base)
    if r.rc != 0:
        record(A, "base run", "named, wrong", r.err.strip().splitlines()[-1:])
        return
    ckpt = os.path.join(rd, "checkpoints")
    pristine = os.path.join(root, "ck_pristine")
    shutil.rmtree(pristine, ignore_errors=True)
    shutil.copytree(rd, pristine)

    def reset():
        shutil.rmtree(rd)
        shutil.copytree(pristine, rd)

    def data_files(step, item="params"):
        fs = [f for f in glob.glob(os.path.join(ckpt, str(step), item, "**"), recursive=True) if os.path.isfile(f)]
        return sorted(fs, key=os.path.getsize, reverse=True)

    import jaxtool

    ref = api(lambda: jaxtool.load_model(ckpt, step=3))
    ref_leaves = [np.asarray(x) for x in __import__("jax").tree.leaves(ref.value.params)] if ref.exc is None else None

    def same_as_ref(m):
        import jax
        return all(np.array_equal(np.asarray(a), b) for a, b in zip(jax.tree.leaves(m.params), ref_leaves))

    def resume_ok(r):
        return "finished after 4 steps" in r.out and ("step 2" in r.text)

    for kind in ("truncated", "deleted"):
        reset()
        f = data_files(3)[0]
        os.truncate(f, os.path.getsize(f) // 2) if kind == "truncated" else os.remove(f)
        r = cli(*base[:-1], "max_steps=4", "--resume")
        classify(A, f"{kind} params file in the latest step, resume (falls back)", r, "ok", ok=resume_ok)
        reset()
        f = data_files(3)[0]
        os.truncate(f, os.path.getsize(f) // 2) if kind == "truncated" else os.remove(f)
        out = os.path.join(root, "hf_out")
        shutil.rmtree(out, ignore_errors=True)
        r = cli("convert", "orbax-to-hf", "--ckpt", ckpt, "--out", out, "--step", "3")
        classify(A, f"{kind} params file, convert --step 3", r, "error", ok=lambda r: "step 3" in r.err)
    reset()
    f = data_files(3)[0]
    flip_bit(f, random.Random(0))
    r = cli(*base[:-1], "max_steps=4", "--resume")
    classify(A, "bit flip in the latest step, resume (falls back)", r, "ok", ok=resume_ok)
    reset()
    meta = glob.glob(os.path.join(ckpt, "3", "meta", "*metadata*"))[0]
    open(meta, "w").write('{"step": 3, "data_st')
    out = os.path.join(root, "hf_meta")
    shutil.rmtree(out, ignore_errors=True)
    r = cli("convert", "orbax-to-hf", "--ckpt", ckpt, "--out", out, "--step", "3")
    classify(A, "damaged training meta only, convert --step 3", r, "ok",
             ok=lambda r: os.path.isfile(os.path.join(out, "config.json")))
    r = cli(*base[:-1], "max_steps=4", "--resume")
    classify(A, "damaged training meta, resume (falls back)", r, "ok", ok=resume_ok)
    reset()
    for s in (1, 2, 3):
        f = data_files(s)[0]
        os.truncate(f, os.path.getsize(f) // 2)
    classify(A, "every step damaged, resume", cli(*base[:-1], "max_steps=4", "--resume"), "error")
    reset()
    for name, content in (("invalid JSON", b"{oops"), ("not UTF-8", b'{"format": "jax\xfftool"}'),
                          ("a list", b"[1, 2]"), ("model not an object", b'{"format": "jaxtool", "model": 5}')):
        reset()
        open(os.path.join(ckpt, "jaxtool.json"), "wb").write(content)
        classify(A, f"jaxtool.json {name}, load_model", api(lambda: jaxtool.load_model(ckpt)), "error")
    # single-bit flips in parameter data, loaded by step
    rng = random.Random(17)
    for t in range(18):
        reset()
        fs = [f for f in data_files(3) if os.path.getsize(f) > 1000]
        flip_bit(rng.choice(fs), rng)
        r = api(lambda: jaxtool.load_model(ckpt, step=3))
        if r.exc is None and ref_leaves is not None:
            record(A, f"bit flip #{t} in params data, load_model(step=3)",
                   "silent wrong" if not same_as_ref(r.value) else "correct", "loaded without error")
        else:
            classify(A, f"bit flip #{t} in params data, load_model(step=3)", r, "error")
    reset()


def probe_model_files(root, model):
    import jaxtool

    A = "model files"
    cfg = json.load(open(os.path.join(model, "config.json")))

    def variant(name, mutate=None, raw=None, files=None):
        d = os.path.join(root, "models", name.replace(" ", "_"))
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(model, d)
        if raw is not None:
            open(os.path.join(d, "config.json"), "wb").write(raw)
        elif mutate is not None:
            c = json.loads(json.dumps(cfg))
            c = mutate(c)
            open(os.path.join(d, "config.json"), "w").write(json.dumps(c))
        if files:
            files(d)
        return d

    def probe(name, **kw):
        d = variant(name, **kw)
        classify(A, name, api(lambda: jaxtool.load_model(d)), "error")

    probe("config.json a list", raw=b"[1, 2]")
    probe("config.json invalid JSON", raw=b'{"model_type": ')
    probe("config.json not UTF-8", raw=json.dumps(cfg).replace('"llama"', '"ll\\u00e1ma"').encode().replace(b"\\u00e1", b"\xe1"))
    for key, val in (("hidden_size", "64"), ("hidden_size", "abc"), ("num_attention_heads", 0),
                     ("num_key_value_heads", 3), ("intermediate_size", -1), ("rms_norm_eps", "x"),
                     ("rope_scaling", "abc"), ("model_type", "gpt2"), ("eos_token_id", ["a"]),
                     ("vocab_size", 1.5)):
        probe(f"config.json {key}={val!r}", mutate=lambda c, k=key, v=val: {**c, k: v})
    probe("config.json without vocab_size", mutate=lambda c: {k: v for k, v in c.items() if k != "vocab_size"})

    def trunc(d):
        f = os.path.join(d, "model.safetensors")
        os.truncate(f, os.path.getsize(f) // 2)

    probe("safetensors truncated", files=trunc)
    probe("safetensors missing", files=lambda d: os.remove(os.path.join(d, "model.safetensors")))
    probe("safetensors header garbage", files=lambda d: open(os.path.join(d, "model.safetensors"), "wb").write(b"\xff" * 64))
    probe("tokenizer.json garbage", files=lambda d: open(os.path.join(d, "tokenizer.json"), "w").write("{oops"))
    classify(A, "no such path", api(lambda: jaxtool.load_model(os.path.join(root, "nope"))), "error")
    g = os.path.join(root, "models", "junk.gguf")
    open(g, "wb").write(b"GGUF" + os.urandom(100))
    classify(A, "random .gguf", api(lambda: jaxtool.load_model(g)), "error")


def probe_cli(root, model):
    A = "cli"
    r = cli("train", "--help")
    text = r.out
    import re

    cited = sorted(set(re.findall(r"configs/[\w./-]+\.yaml", text)))
    repo = os.path.dirname(HERE)
    missing = [c for c in cited if not os.path.isfile(os.path.join(repo, c))]
    record(A, "train --help cites existing recipes", "silent wrong" if missing else "correct",
           f"missing: {missing}" if missing else f"{cited}")
    classify(A, "unknown command", cli("frobnicate"), "error")
    classify(A, "convert from a missing checkpoint", cli("convert", "orbax-to-hf", "--ckpt", os.path.join(root, "nope"),
                                                         "--out", os.path.join(root, "o")), "error")
    classify(A, "convert into an unwritable path", cli("convert", "hf-to-orbax", "--hf", model,
                                                       "--out", "/proc/jaxtool_probe/out"), "error")


def probe_eval(root, model):
    A = "eval"
    d = os.path.join(root, "eval")
    os.makedirs(d, exist_ok=True)
    # the dialogue rules judge on odd pythonic generations
    try:
        from jaxtool.data.formats import get_format
        from jaxtool.data.schema import Message, Tool, ToolCall
        from jaxtool.eval.judge import Prediction, RuleJudge, TurnCase
    except ImportError as e:
        record(A, "judge probes", "n/a", e)
        return
    fmt = get_format("pythonic")
    tool = Tool("book_flight", "Book a flight", {"type": "object", "properties": {"origin": {"type": "string"}},
                                                 "required": ["origin"]})
    gold = Message("assistant", None, tool_calls=(ToolCall("book_flight", {"origin": "Paris"}),))
    for text in ("[book_flight(origin=1+2j)]", "[book_flight(origin=...)]", "[book_flight(origin=b'x')]",
                 "[book_flight(origin={1, 2})]", "[book_flight(origin=1e999)]"):
        def judge(text=text):
            reply = fmt.parse(text)
            case = TurnCase("call", (tool,), (Message("user", "fly from Paris"),), gold, Prediction.from_reply(text, reply))
            v = RuleJudge().judge(case)
            json.dumps(v.to_dict(), allow_nan=False)
            json.dumps(case.prediction.to_dict(), allow_nan=False)
            return v
        r = api(judge)
        if r.exc is not None and not is_named(r.exc):
            record(A, f"judge on {text}", "raw traceback", f"{type(r.exc).__name__}: {r.exc}")
        else:
            record(A, f"judge on {text}", "correct" if r.exc is None and not r.value.passed else "silent wrong",
                   r.value.reason if r.value else r.exc)
    # BFCL scoring of predictions files
    preds = os.path.join(d, "preds.jsonl")

    def score(rows, name, expect, ok=None):
        write_jsonl(preds, rows)
        out = os.path.join(d, "score_" + name.replace(" ", "_") + ".json")
        classify(A, f"bfcl-score: {name}", cli("eval", "bfcl-score", "--category", "simple_python", "--predictions",
                                               preds, "--out", out), expect, ok)

    score([{"id": "simple_python_0", "text": None}, {"id": "simple_python_1", "text": "[f(x=1)]"}],
          '"text": null', "ok")
    score([{"id": "simple_python_0", "result": [{"calculate_triangle_area": '{"base": 10, "height": 5}'}]}],
          'BFCL FC "result" list', "ok")
    score([b'{"id": "simple_python_0", "text": "caf\xe9"}\n'], "non-UTF-8 row", "error")
    score([b'{"id": "simple_python_0", "text": "[f(a=1)]"\n'], "invalid JSON row", "error")
    # eval dialog with a non-UTF-8 row
    conv = seeds()[0]
    line = (json.dumps(conv, ensure_ascii=False) + "\n").encode()
    f = write_jsonl(os.path.join(d, "dialog_utf8.jsonl"), [line.replace(b"Paris", b"Par\xffis", 1), line])
    common = ["--model", model, "--format", "hermes", "--max-new-tokens", "4", "--limit", "1", "--no-progress"]
    classify(A, "eval dialog non-UTF-8 row, error", cli("eval", "dialog", "--data", f"conversations:{f}", *common,
                                                        "--out", os.path.join(d, "dlg_e")), "error")
    classify(A, "eval dialog non-UTF-8 row, skip", cli("eval", "dialog", "--data", f"conversations:{f}", *common,
                                                       "--on-bad-row", "skip", "--out", os.path.join(d, "dlg_s")),
             "skip")


def probe_round3(root, model, good):
    """Issue 26's classes: YAML edge cases, hostile call arguments and text, a locked run_dir,
    manifest coverage, iTool stage markers."""
    import fcntl

    A = "round 3"
    d = os.path.join(root, "r3")
    os.makedirs(d, exist_ok=True)
    for name, text in (("duplicate YAML key", "batch_size: 8\nseed: 1\nbatch_size: 64\n"),
                       ("deeply nested YAML", "optim: " + "[" * 50000 + "]" * 50000 + "\n"),
                       ("5,000-digit integer in a recipe", "seed: " + "9" * 5000 + "\n")):
        p = os.path.join(d, "r.yaml")
        open(p, "w").write(text)
        classify(A, name, cli("train", "--print-config", p), "error")
    conv = seeds()[0]
    tok = ["--tokenizer", model, "--format", "hermes", "--on-bad-row", "skip"]
    for name, args in (("NaN argument", '{"location": NaN}'), ("1e999 argument", '{"location": 1e999}'),
                       ("argument off the schema", '{"location": "Paris", "zip": 1}')):
        row = json.loads(json.dumps(conv))
        row["messages"][1]["tool_calls"][0]["function"]["arguments"] = args
        f = write_jsonl(os.path.join(d, "args.jsonl"), [conv, row])
        classify(A, f"{name}, inspect skip", cli("data", "inspect", f"conversations:{f}", *tok), "skip")
    lone = (json.dumps(conv).replace("weather", "weather \\ud800", 1) + "\n").encode()
    f = write_jsonl(os.path.join(d, "lone.jsonl"), [lone, conv])
    classify(A, "lone surrogate, inspect skip", cli("data", "inspect", f"conversations:{f}", *tok), "skip")
    rd = os.path.join(d, "locked")
    os.makedirs(rd, exist_ok=True)
    with open(os.path.join(rd, ".jaxtool.lock"), "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        classify(A, "second train into a run_dir in use", cli(*train_args(model, rd, f"data.train=conversations:{good}")),
                 "error", ok=lambda r: "in use" in r.err)
    from jaxtool.itool.stages import Stage

    sd = os.path.join(d, "stage")
    os.makedirs(os.path.join(sd, ".done"), exist_ok=True)
    for content in (b"{oops", b"{}"):
        open(os.path.join(sd, ".done", "data.json"), "wb").write(content)
        res = api(lambda: Stage(sd, "data", sd, printer=lambda *_: None).done())
        classify(A, f"iTool marker {content!r}", res, "ok", ok=lambda r: r.value is False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "jaxtool_probe"),
                    help="scratch directory (the tiny model is cached there)")
    ap.add_argument("--areas", default="config,data,checkpoints,model files,cli,eval")
    args = ap.parse_args()
    import jaxtool

    print(f"jaxtool from {os.path.dirname(jaxtool.__file__)}")
    os.makedirs(args.root, exist_ok=True)
    model = tiny_model(args.root)
    work = os.path.join(args.root, "work")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    good = write_jsonl(os.path.join(work, "good.jsonl"), [(json.dumps(s) + "\n").encode() for s in seeds()[:8]])
    areas = args.areas.split(",")
    t0 = time.time()
    for area, fn in (("config", lambda: probe_config(work, model, good)), ("data", lambda: probe_data(work, model, good)),
                     ("checkpoints", lambda: probe_checkpoints(work, model, good)),
                     ("model files", lambda: probe_model_files(work, model)), ("cli", lambda: probe_cli(work, model)),
                     ("eval", lambda: probe_eval(work, model)),
                     ("round 3", lambda: probe_round3(work, model, good))):
        if area in areas:
            fn()
    outcomes = ["named error", "counted skip", "correct", "named, wrong", "raw traceback", "silent wrong", "data loss"]
    table = {}
    for r in RESULTS:
        table.setdefault(r["area"], {}).setdefault(r["outcome"], 0)
        table[r["area"]][r["outcome"]] += 1
    print(f"\n{len(RESULTS)} probes in {time.time() - t0:.0f}s")
    print("| area | " + " | ".join(outcomes) + " |")
    print("|---|" + "---|" * len(outcomes))
    for area, counts in table.items():
        print(f"| {area} | " + " | ".join(str(counts.get(o, 0)) for o in outcomes) + " |")
    total = {o: sum(c.get(o, 0) for c in table.values()) for o in outcomes}
    print("| all | " + " | ".join(str(total[o]) for o in outcomes) + " |")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"jaxtool": os.path.dirname(jaxtool.__file__), "results": RESULTS, "table": table}, fh, indent=1)


if __name__ == "__main__":
    main()
