"""The handshake's common case is never looser than websockets' own parser and ``accept()``.

Each request here is answered both ways: whatever :func:`.handshake.accept`
accepts, websockets accepts with the same ``Sec-WebSocket-Accept``; what it
leaves, websockets decides (and the broadcaster sends its answer). Each
request read by :func:`.handshake.parse` is read by websockets' parser too,
and to the same request.
"""

from __future__ import annotations

import random

import pytest
from websockets.datastructures import Headers
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.typing import Origin

from live_notifications.broadcaster import handshake

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


# Reading the request.

RAW = (
    b"GET /?x=1 HTTP/1.1\r\n"
    b"Host: notifications.example\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Origin: https://notifications.example\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n"
    b"Cookie: a=\xe9t\xe9\r\n"
    b"\r\n"
)


def websockets_parse(data: bytes) -> Request | None:
    """What websockets' parser reads from ``data``, or ``None`` if it refuses it."""
    protocol = ServerProtocol(origins=ORIGINS)
    protocol.receive_data(data)
    requests = [event for event in protocol.events_received() if isinstance(event, Request)]
    return requests[0] if requests and protocol.handshake_exc is None else None


def same(ours: Request, theirs: Request) -> bool:
    return (ours.path, ours.method, ours.protocol, list(ours.headers.raw_items())) == (
        theirs.path,
        theirs.method,
        theirs.protocol,
        list(theirs.headers.raw_items()),
    )


def with_headers(*lines: bytes) -> bytes:
    return RAW[: -len(b"\r\n")] + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


def test_a_common_request_is_read_as_websockets_reads_it() -> None:
    for data in [
        RAW,
        with_headers(b"X-Forwarded-For: 203.0.113.7, 10.0.0.1"),
        with_headers(b"Empty:", b"Spaces:  \t padded \t ", b"Content-Length: 0"),
        with_headers(*[b"X-Many: %d" % n for n in range(128 - 8)]),  # websockets' limit: 128
        with_headers(b"X-Long: " + b"a" * (8192 - len(b"X-Long: \r\n"))),  # its line limit
    ]:
        ours, theirs = handshake.parse(data), websockets_parse(data)
        assert ours is not None and theirs is not None
        assert same(ours, theirs)
    assert handshake.parse(RAW).headers["Cookie"] == "a=\xe9t\xe9"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(RAW.replace(b"GET", b"POST"), id="other-method"),
        pytest.param(RAW.replace(b"HTTP/1.1", b"HTTP/1.0"), id="http-1.0"),
        pytest.param(RAW.replace(b"HTTP/1.1", b"HTTP/1.1 x"), id="request-line-extra"),
        pytest.param(RAW.replace(b"/?x=1", "/é".encode()), id="path-not-ascii"),
        pytest.param(RAW.replace(b"/?x=1", b"/a\nb"), id="lf-in-path"),
        pytest.param(RAW.replace(b"Host:", b"Host :"), id="space-before-colon"),
        pytest.param(RAW.replace(b"Host:", b"Host"), id="no-colon"),
        pytest.param(RAW.replace(b"Host:", b" Host:"), id="folded"),
        pytest.param(RAW.replace(b"Upgrade: websocket\r\n", b"Upgrade: websocket\n"), id="lf"),
        pytest.param(RAW.replace(b"websocket", b"web\rsocket"), id="cr"),
        pytest.param(RAW.replace(b"websocket", b"web\x00socket"), id="nul-in-value"),
        pytest.param(with_headers(b"Content-Length: 5"), id="body"),
        pytest.param(with_headers(b"Transfer-Encoding: chunked"), id="chunked"),
        pytest.param(with_headers(*[b"X-Many: %d" % n for n in range(128 - 7)]), id="129-headers"),
        pytest.param(with_headers(b"X-Long: " + b"a" * (8193 - len(b"X-Long: \r\n"))), id="long"),
    ],
)
def test_the_rest_is_left_to_websockets_parser(data: bytes) -> None:
    assert handshake.parse(data) is None
    ours_with_websockets = websockets_parse(data)
    if ours_with_websockets is not None:  # it may read what is out of the common case
        assert data.startswith((b"POST", b"GET /?x=1 HTTP/1.0"))


def test_no_request_is_read_other_than_websockets_would() -> None:
    """A seeded fuzz: the common request with bytes changed, added or removed."""
    chance = random.Random(11)
    alphabet = b"\r\n\t :,;/=\x00\x7f\x80\xffGETHTPa0"
    read = 0
    for _ in range(3000):
        data = bytearray(RAW[:-4])
        for _ in range(chance.randint(1, 4)):
            at = chance.randrange(len(data))
            edit = chance.choice(("replace", "insert", "delete"))
            byte = alphabet[chance.randrange(len(alphabet))]
            if edit == "replace":
                data[at] = byte
            elif edit == "insert":
                data.insert(at, byte)
            else:
                del data[at]
        raw = bytes(data) + b"\r\n\r\n"
        end = raw.find(b"\r\n\r\n") + 4  # as the connection hands it over
        ours = handshake.parse(raw[:end])
        if ours is not None:
            read += 1
            theirs = websockets_parse(raw[:end])
            assert theirs is not None, raw
            assert same(ours, theirs), raw
    assert 300 < read < 2700  # both sides of the line were exercised
