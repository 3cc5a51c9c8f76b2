"""Helpers of `distil.evaluate`: inference timing."""
