"""Trio drivers: sockets, tasks and timers around the sans-IO cores of ``overlay.proto``."""
