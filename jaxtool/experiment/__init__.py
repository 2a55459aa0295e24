"""Experiments that test a method's claim end to end: `diatool` (DiaTool-DPO's Table 3 arms on
held-out SGD services), with the SGD seed episodes (`sgd_seeds`) and bootstrap intervals (`stats`)."""
