"""Shared test setup. Eight host CPU devices so sharding tests can build a (2, 2, 2) mesh in process;
single-device code is unaffected (arrays default to device 0).

One persistent JAX compilation cache per test session (a fresh temporary directory, removed at the
end; subprocesses the tests start inherit it): many tests build a Trainer around the same tiny
model, and every Trainer jits fresh closures, so without it identical programs are compiled again
and again. Measured on this 2-core machine: the resume test 56 -> 30 s, the tiny experiment
97 -> 78 s. Nothing is cached between sessions, so every run compiles from scratch at least once."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="jaxtool-tests-jit-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest


SLOW_LIST = os.path.join(os.path.dirname(__file__), "slow_tests.txt")


def pytest_configure(config):
    # `slow`: the fast loop is `pytest -m "not slow"` (≤ 5 minutes on 2 cores). A test is slow when it is
    # marked in its file (the long end-to-end ones) or listed, by node id, in tests/slow_tests.txt (measured:
    # see that file's header for the run and the threshold).
    config.addinivalue_line("markers", "slow: a test the fast loop leaves out (deselect with -m 'not slow')")


def _slow_ids() -> set[str]:
    if not os.path.isfile(SLOW_LIST):
        return set()
    with open(SLOW_LIST, encoding="utf-8") as fh:
        return {ln.split("#", 1)[0].strip() for ln in fh} - {""}


def pytest_collection_modifyitems(config, items):
    slow = _slow_ids()
    for item in items:
        if item.nodeid in slow:
            item.add_marker(pytest.mark.slow)
        # pytest-xdist (pytest.ini runs two workers with --dist loadgroup): a module whose tests share a
        # module-scoped fixture (e.g. test_multiprocess's two- and one-process runs) runs on one worker,
        # so the fixture is built once, not once per worker
        defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
        if any(fd.scope == "module" for fds in defs.values() for fd in fds):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The embedded SmolLM2-135M-Instruct tokenizer, rebuilt from the GGUF file (no download)."""
    from jaxtool.models.gguf import _reader, embedded_gguf_path, gguf_tokenizer

    path = embedded_gguf_path()
    return gguf_tokenizer(_reader(path), path)


def make_tiny_tokenizer(texts):
    """A small byte-level BPE (vocab ≤ 1024) trained on `texts`, with ChatML's special tokens, so
    training tests run a realistic tokenizer at a tiny vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token="<|endoftext|>")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """An HF directory: a 2-layer random Llama (d=64) with a 1k-vocabulary BPE tokenizer trained on
    the tool-dialogue fixtures. Loads with jaxtool.load_model and with transformers."""
    import json

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    here = os.path.dirname(__file__)
    texts = []
    for name in ("diatool/seeds.jsonl",):
        with open(os.path.join(here, "fixtures", name), encoding="utf-8") as fh:
            texts += [ln for ln in fh]
    texts += [json.dumps(json.loads(t), ensure_ascii=False, indent=1) for t in texts]
    tok = make_tiny_tokenizer(texts)
    torch.manual_seed(0)
    hc = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                     max_position_embeddings=4096, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id)
    d = str(tmp_path_factory.mktemp("tiny_model"))
    LlamaForCausalLM(hc).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def smollm2_model():
    """The embedded SmolLM2-135M-Instruct as a jaxtool Model (loaded once per test session)."""
    import jaxtool

    return jaxtool.load_model("smollm2")


@pytest.fixture(scope="session")
def smollm2_hf():
    """transformers' own load of the same GGUF file (PyTorch, float32): the reference oracle."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from jaxtool.models.gguf import embedded_gguf_path

    d, f = os.path.split(embedded_gguf_path())
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(d, gguf_file=f)
