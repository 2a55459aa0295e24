"""Shared test setup. Eight host CPU devices so sharding tests can build a (2, 2, 2) mesh in process;
single-device code is unaffected (arrays default to device 0)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The embedded SmolLM2-135M-Instruct tokenizer, rebuilt from the GGUF file (no download)."""
    from jaxtool.models.gguf import _reader, embedded_gguf_path, gguf_tokenizer

    path = embedded_gguf_path()
    return gguf_tokenizer(_reader(path), path)
