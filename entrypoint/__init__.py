"""entrypoint: a PID-1-safe, config-driven container entrypoint and process supervisor."""

__version__ = "0.1.0"
