"""Lightning callbacks that keep long runs safe: RNG state in checkpoints, non-finite loss guard, preemption."""
