"""iTool (Zeng et al. 2025, "iTool: Reinforced Fine-Tuning with Dynamic Deficiency Calibration for
Advanced Tool Use", arXiv 2501.09766): everything around the step-level MCTS.

- `examples`    training examples (query + gold answer), bad input counted by reason
- `difficulty`  the easy / medium / hard split of the warm-up (§3.1)
- `buffer`      the replay buffer: gold-response perplexity (Eq. 4), top-10% selection (§3.2)
- `outcome`     outcome correctness O of the reward R = O + C (Eq. 6), the search's host callback
- `sample`      the "without MCTS" ablation sampler
- `pairs`       pairs from the searched trees (`extract_pairs`) -> logged records -> SimPO training rows
- `filters`     App. B's pair filters (similarity, Q gap, chosen Q)
- `search_adapter`  one call into `jaxtool.sample.mcts` and the filters on the logged records
- `mcts_bench`  `jaxtool bench mcts`: the jitted search against a Python-loop baseline
- `loop`        the loop and its run directory, resumable stage by stage
"""

from jaxtool.itool.config import ItoolConfig
from jaxtool.itool.loop import ItoolRun, run_itool

__all__ = ["ItoolConfig", "ItoolRun", "run_itool"]
