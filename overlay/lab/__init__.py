"""Whole networks to try things on: the real-NAT lab, and a local network in one process.

The real-NAT lab (this package's exports): network namespaces, veth pairs
and iptables MASQUERADE on this machine.  Tests and ``bin/nat-lab`` use it to
run the overlay's server, supernodes and clients behind real NAT.  Needs
Linux, root, ``ip`` and ``iptables``; :func:`available` says whether it can
run here.  See docs/nat-lab.md.  Standard library only.

:mod:`overlay.lab.local_network`: a directory server, supernodes and chat
users in one trio process on 127.0.0.1, for ``overlay demo`` and ``overlay
bench chat``.  It runs the whole stack, so it is imported only by name, never
by this package.
"""

from __future__ import annotations

from overlay.lab.errors import LabError
from overlay.lab.netns import Lab, available
from overlay.lab.topology import Host, HostKind, LabConfig

__all__ = ["Host", "HostKind", "Lab", "LabConfig", "LabError", "available"]
