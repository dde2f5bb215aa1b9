"""Who a client is, for the log and the metrics: its address, from the socket or the edge.

A client can write anything in ``X-Forwarded-For``; only the entry that a
trusted proxy appended, the last one, says who connected to that proxy.
Proxies append (HAProxy's ``option forwardfor`` adds a header of its own
after the client's; nginx and Envoy add to the list), so the last entry of
the last header is the trusted proxy's, and only when the peer is one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Networks = Sequence[Network]


def networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Parse CIDRs (``10.0.0.0/8``) or addresses; :class:`ValueError` names a bad one."""
    parsed = []
    for value in values:
        try:
            parsed.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ValueError(f"not an address or network: {value!r}") from None
    return tuple(parsed)


def client_address(peer: str | None, forwarded: list[str], trusted: Networks) -> str:
    """The client's address: the peer's, or the last forwarded entry if the peer is trusted.

    What is returned is always an address as :mod:`ipaddress` prints it, or
    ``"-"``: never a client's text. A trusted proxy's entry that isn't an
    address (``unknown``, an obfuscated name) leaves the proxy's address.
    """
    address = _parse(peer)
    if address is None:
        return "-"
    if forwarded and any(address in network for network in trusted):
        entry = _parse(forwarded[-1].rpartition(",")[2].strip())
        if entry is not None:
            address = entry
    return str(address)


def _parse(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text:
        return None
    if text.startswith("[") and "]" in text:  # [2001:db8::1]:port
        text = text[1 : text.index("]")]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            return None  # fe80::1%zone: the zone is free text
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped  # ::ffff:10.0.0.1, from a dual-stack socket
    return address
