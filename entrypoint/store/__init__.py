"""Run history and runtime enable/disable: in memory, and in SQLite under `state_dir`."""
