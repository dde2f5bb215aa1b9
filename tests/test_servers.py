"""The test helpers' own guarantees, where a test would otherwise fail by chance."""

from tests.servers import free_port


def test_free_port_never_hands_out_a_port_twice() -> None:
    # The kernel gives a port again as soon as its probe socket is closed:
    # 2,000 bare probes here repeated about a hundred of them.
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
