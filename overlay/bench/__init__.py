"""Benchmarks on real sockets (``overlay bench transport``); simulated ones live in overlay.sim."""
