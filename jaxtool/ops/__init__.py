"""Compute kernels behind plain signatures: fused attention per backend (`attention`), token
log-probs / cross-entropy that never hold full-vocabulary logits (`xent`).

Each op is a pure function of arrays; the implementation is chosen at trace time from the backend
(and can be forced), so the model code stays the same on CPU, GPU and TPU.
"""
