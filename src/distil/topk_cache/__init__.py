"""Cached top-k teacher outputs for pretraining distillation without the teacher in the loop.

`python -m distil.cache_teacher` runs the teacher once over shards of `distil.prepare` and stores, for every position
the soft-target term reads, the teacher's top-k ids, their log-probabilities at the distillation temperature and the
log of the mass outside them (`store.py` says the layout, `writer.py` how it is written, `fingerprint.py` what it is
tied to); `distill.teacher_cache=DIR` trains from it (`stream.py` builds the batches,
`distil.modules.cached_teacher` the step).
"""
