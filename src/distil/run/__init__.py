"""Run plumbing: one writer per folder (`folder_lock`, `run_dir_lock`), and the optional extras a command line needs
(`extras`)."""
