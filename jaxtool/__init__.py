"""jaxtool: JAX/TPU-native training of tool-using LLMs (DiaTool-DPO, iTool, CALM).

Public API:
    jaxtool.load_model(path, dtype="float32") -> Model
        path: a Hugging Face directory (config.json + safetensors; Llama, Qwen2/Qwen2.5 or Qwen3), a .gguf
        file, a jaxtool checkpoint directory, or "smollm2" for the embedded default model.
"""

__version__ = "0.1.0"


def load_model(path, dtype="float32", **kwargs):
    """Load a Llama model from an HF directory, a .gguf file or a jaxtool checkpoint; see `jaxtool.api`."""
    from jaxtool.api import load_model as _load

    return _load(path, dtype=dtype, **kwargs)


__all__ = ["load_model", "__version__"]
