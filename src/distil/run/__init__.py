"""Run plumbing: what keeps a run's folders to one writer."""
