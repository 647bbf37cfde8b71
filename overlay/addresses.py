"""HOST:PORT parsing and formatting, shared by the CLI, the node and the control socket."""

from __future__ import annotations

import ipaddress

Address = tuple[str, int]


def parse_address(text: str, *, default_host: str | None = None) -> Address:
    """Parse ``HOST:PORT``, ``[IPV6]:PORT`` or (with ``default_host``) a bare ``PORT``.

    Raises ValueError with a message fit to show a user.
    """
    text = text.strip()
    if default_host is not None and text.isdigit():
        host, port_text = default_host, text
    elif text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"expected [IPV6]:PORT, got {text!r}")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"not an IPv6 address: {host!r}") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        if ":" in host:
            raise ValueError(f"write IPv6 addresses in brackets, like [::1]:9000, not {text!r}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535, got {port_text!r}")
    return host, int(port_text)


def format_address(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
