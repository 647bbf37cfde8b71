"""The simulator: real nodes over an emulated network, in virtual time, from a seed.

:mod:`overlay.sim.network` emulates links (latency, bandwidth, jitter, failures)
behind the :class:`~overlay.net.transport.Transport` interface;
:mod:`overlay.sim.topology` builds or loads the graphs that say which links exist.
"""
