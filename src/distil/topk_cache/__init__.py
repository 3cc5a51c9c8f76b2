"""Cached top-k teacher outputs for pretraining distillation without the teacher in the loop.

`python -m distil.cache_teacher` runs the teacher once over shards of `distil.prepare` and stores, for every position
the soft-target term reads, the teacher's top-k ids, their log-probabilities at the distillation temperature and the
log of the mass outside them (`store.py` says the layout, `writer.py` how it is written, `fingerprint.py` what it is
tied to); `distill.teacher_cache=DIR` trains from it (`stream.py` builds the batches,
`distil.modules.cached_teacher` the step, `objective.py` says which terms a cache can give).

The approximation: the soft-target term becomes the KL between teacher and student over k + 1 outcomes, the teacher's
top-k ids and one bucket for all other ids (`distil.modules.losses.topk_kl_loss`). It equals the full KL at k = V and
is below it otherwise, missing how each model spreads its tail mass (the student is still pushed to give the tail the
teacher's total mass). Log-probabilities are stored in float16 by default (about 3 significant digits).

What it costs, per million training tokens and per masking, for rows of 128 tokens of a vocabulary of at most 65,536
ids (uint16 ids, float16 values; the shards themselves hold 2 MB): with `kl_positions=masked` (19 positions per row)
5.7 MB at k = 8, 20 MB at k = 32, 78 MB at k = 128; with `kl_positions=all` (128 positions) 35, 133 and 523 MB; the
optional hidden states add L x H x 2 bytes per row: 1.56 GB per million tokens at H = 768. Each masking multiplies it.
Against dynamic masking, the masks are fixed: pass p reads masking p mod M, so they repeat after M passes (dynamic
masking draws new ones every pass, RoBERTa's point against static masking: one masking repeated over many passes
learns from fewer distinct masked positions); and the masked count is drawn per row, not per batch.
"""
