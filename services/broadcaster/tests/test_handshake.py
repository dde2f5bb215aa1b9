"""The handshake's common case is never looser than websockets' own ``accept()``.

Each request here is answered both ways: whatever :func:`.handshake.accept`
accepts, websockets accepts with the same ``Sec-WebSocket-Accept``; what it
leaves, websockets decides (and the broadcaster sends its answer).
"""

from __future__ import annotations

import pytest
from websockets.datastructures import Headers
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.typing import Origin

from broadcaster import handshake

ORIGINS = [Origin("https://notifications.example"), None]
KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example: its accept is below
VALID = [
    ("Host", "notifications.example"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", KEY),
    ("Sec-WebSocket-Version", "13"),
]


def request(*changes: tuple[str, str | None], protocol: str = "HTTP/1.1") -> Request:
    """The valid request with headers replaced (``None``: removed) or added."""
    headers = Headers()
    replaced = dict(changes)
    for name, value in VALID:
        if name not in replaced:
            headers[name] = value
    for name, value in changes:
        if value is not None:
            headers[name] = value
    made = Request("/", headers)
    made.protocol = protocol  # type: ignore[misc]
    return made


def added(name: str, value: str, *, twice: bool = False) -> Request:
    """The valid request with one more ``name`` header (two, if ``twice``)."""
    made = request()
    for _ in range(2 if twice else 1):
        made.headers[name] = value  # Headers add a value, they don't replace it
    return made


def websockets_status(made: Request) -> int:
    return ServerProtocol(origins=ORIGINS).accept(made).status_code


def test_the_common_case_is_accepted_as_websockets_would() -> None:
    for made in [
        request(),
        request(("Origin", "https://notifications.example")),
        request(("Connection", "keep-alive, Upgrade")),
        request(("Upgrade", "WebSocket")),
        request(("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")),
    ]:
        accepted = handshake.accept(made, ORIGINS)
        assert accepted is not None
        assert accepted.endswith(b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
        response = ServerProtocol(origins=ORIGINS).accept(made)
        assert response.status_code == 101
        assert response.headers["Sec-WebSocket-Accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert "Sec-WebSocket-Extensions" not in response.headers  # none negotiated


@pytest.mark.parametrize(
    ("made", "status"),
    [
        pytest.param(request(("Origin", "https://elsewhere.example")), 403, id="other-origin"),
        pytest.param(request(("Upgrade", None)), 426, id="no-upgrade"),
        pytest.param(request(("Upgrade", "h2c")), 426, id="other-upgrade"),
        pytest.param(request(("Connection", "keep-alive")), 426, id="no-connection-upgrade"),
        pytest.param(request(("Connection", "Upgrade, b@d")), 400, id="connection-not-tokens"),
        pytest.param(request(("Sec-WebSocket-Key", None)), 400, id="no-key"),
        pytest.param(request(("Sec-WebSocket-Key", "c2hvcnQ=")), 400, id="short-key"),
        pytest.param(request(("Sec-WebSocket-Key", "not base64!!")), 400, id="bad-key"),
        pytest.param(added("Sec-WebSocket-Key", KEY), 400, id="two-keys"),
        pytest.param(
            added("Origin", "https://notifications.example", twice=True), 400, id="two-origins"
        ),
        pytest.param(request(("Sec-WebSocket-Version", "8")), 400, id="old-version"),
        pytest.param(request(protocol="HTTP/1.0"), 505, id="http-1.0"),
        pytest.param(request(("Sec-WebSocket-Protocol", "chat")), 101, id="subprotocol-offered"),
    ],
)
def test_the_rest_is_left_to_websockets(made: Request, status: int) -> None:
    assert handshake.accept(made, ORIGINS) is None
    assert websockets_status(made) == status


def test_any_origin_when_none_is_configured() -> None:
    assert handshake.accept(request(("Origin", "https://elsewhere.example")), None) is not None
