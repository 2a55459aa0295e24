"""CALM (Acikgoz et al. 2025, "Can a Single Model Master Both Multi-turn Conversations and Tool Use?
CALM: A Unified Conversational Agentic Language Model", arXiv 2502.08820): the CALM-IT multi-task
instruction-tuning mix, built from the public datasets jaxtool reads.

CALM-IT (the paper's Table 1) interleaves four tasks, every row an Alpaca Instruction / Input /
Output triple of which only the Output is trained:

========== ================================================ ============ ==================
task       what                                             paper rows   module
========== ================================================ ============ ==================
``dst``    SNIPS utterances as single-turn dialogue-state   13,028       `jaxtool.calm.dst`
           tracking (Fig. 4)
``hammer`` function-masked calls (Hammer, Fig. 5) over      13,819       `jaxtool.calm.fc`
           xlam-format calls and ToolACE
``toolace`` ToolACE calls in the same instruction layout    202,500      `jaxtool.calm.fc`
``cra``    SGD as Conversational ReAct API calls            82,236       `jaxtool.calm.cra`
           (Figs. 6-7): action prediction and response
           generation per system turn
========== ================================================ ============ ==================

`jaxtool.calm.mix` interleaves the tasks by weight or cap, `jaxtool.calm.build` runs the whole
build and writes one JSONL (jaxtool conversations: system = Instruction, user = Input, assistant =
Output; train it with the `alpaca` chat format) plus a summary table. Recipes are in
`configs/calm/`; `jaxtool eval suite --suite calm` evaluates on the paper's benchmarks.
"""

TASKS = ("dst", "hammer", "toolace", "cra")

# CALM-IT's task sizes (the paper's Table 1): the default mixing proportions.
TABLE1_ROWS = {"dst": 13_028, "hammer": 13_819, "toolace": 202_500, "cra": 82_236}
