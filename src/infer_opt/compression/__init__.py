"""Model compression: functions that take a loaded transformers causal LM and return it smaller.

One method per module; each returns (model, facts) where facts is a small dict to report.
- magnitude.py: unstructured magnitude pruning (zeros; no speed on dense kernels)
- semi_structured.py: 2:4 sparsity mask, and its CUDA sparse-kernel conversion
- mlp_channels.py: structured pruning of MLP intermediate channels (smaller matmuls)
- layers.py: structured pruning of whole decoder layers by Block Influence
- distill.py: a layer-dropped student trained on the teacher's distributions, cached
- corpus.py: the calibration/training text (CPython's docs, never the evaluation text)
"""
