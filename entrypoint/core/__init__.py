"""The runtime that runs as PID 1: reaper, children, services, supervisor."""
