"""Training: `train(cfg)` runs one recipe (SFT or preference) to the end and returns a TrainResult.

    from jaxtool.config import load_config
    from jaxtool.train import train
    result = train(load_config("configs/simpo_smollm2.yaml", ["data.train=pairs.jsonl", "run_dir=runs/x"]))
    result.hf_dir, result.checkpoint_dir, result.last_metrics

Applications (the iTool loop, experiments) call this as a function: "train N steps on these pairs".
"""

from __future__ import annotations


def train(cfg, *, resume: bool = False, printer=print):
    """Run the training loop of `cfg` (a `jaxtool.config.TrainConfig`) and return its TrainResult."""
    from jaxtool.train.trainer import Trainer

    return Trainer(cfg, printer=printer).run(resume=resume)
