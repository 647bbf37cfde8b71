"""The real-NAT lab: network namespaces, veth pairs and iptables MASQUERADE on this machine.

Tests and ``bin/nat-lab`` use it to run the overlay's server, supernodes and
clients behind real NAT.  Needs Linux, root, ``ip`` and ``iptables``;
:func:`available` says whether it can run here.  See docs/nat-lab.md.
"""

from __future__ import annotations

from overlay.lab.errors import LabError
from overlay.lab.netns import Lab, available
from overlay.lab.topology import Host, HostKind, LabConfig

__all__ = ["Host", "HostKind", "Lab", "LabConfig", "LabError", "available"]
