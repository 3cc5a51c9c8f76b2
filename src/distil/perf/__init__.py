"""Speed work, beside the recipe: how the training step is made fast without changing what it computes.

`StepSpeed` (`step_speed.py`) is the one seam: the recipe (`modules/distillation.py`) hands it the teacher, the
functions to compile and the vocabulary loss to chunk, and gets the same results faster. `chunked_vocab_loss.py` is
the memory-saving vocabulary loss; `bench.py` is `python -m distil.perf.bench`, which measures the step. Every option
has a GPU figure with its command in docs/performance.md.
"""
