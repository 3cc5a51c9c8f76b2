"""Reliability tests: exact resume, preemption, checkpoint integrity, non-finite losses, config checks, security."""
