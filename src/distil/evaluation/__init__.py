"""Helpers of `distil.evaluate` and `distil.finetune`: inference timing and GLUE task data."""
