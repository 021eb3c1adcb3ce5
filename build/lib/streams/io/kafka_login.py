"""A one-shot SASL login probe: asks a Kafka broker whether it accepts a user and password.

kafka-python retries a refused login until its bootstrap timeout (30 s) and then reports the
broker as unreachable; it can even drop the broker's "authentication failed" answer when the
connection close arrives in the same read. So a wrong password looks like a hang followed by
a misleading error. :func:`probe_login` speaks just enough of the Kafka protocol to get the
broker's verdict in one round trip: ``SaslHandshake`` v1 and ``SaslAuthenticate`` v1, with
PLAIN or SCRAM-SHA-256/512 (RFC 5802 / RFC 7677), over TLS when asked. It never retries.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import socket
import ssl
import struct
from dataclasses import dataclass
from typing import Final

SASL_HANDSHAKE: Final[int] = 17
SASL_AUTHENTICATE: Final[int] = 36
UNSUPPORTED_SASL_MECHANISM: Final[int] = 33
CLIENT_ID: Final[bytes] = b"churnstream-login-check"
_HASHES: Final[dict[str, str]] = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}


@dataclass(frozen=True, slots=True)
class LoginVerdict:
    """The broker's answer: ``accepted``, or why not (its own words)."""

    accepted: bool
    detail: str = ""


class _Connection:
    """Blocking request/response framing of the Kafka protocol (header v1, response v0)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.correlation_id = 0

    def request(self, api_key: int, body: bytes) -> bytes:
        self.correlation_id += 1
        header = struct.pack(">hhih", api_key, 1, self.correlation_id, len(CLIENT_ID))
        frame = header + CLIENT_ID + body
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)
        (size,) = struct.unpack(">i", self._read(4))
        response = self._read(size)
        (correlation_id,) = struct.unpack_from(">i", response)
        if correlation_id != self.correlation_id:
            msg = f"response {correlation_id} to request {self.correlation_id}"
            raise OSError(msg)
        return response[4:]

    def _read(self, size: int) -> bytes:
        chunks: list[bytes] = []
        while size:
            chunk = self.sock.recv(size)
            if not chunk:
                raise OSError("the broker closed the connection")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def _handshake(conn: _Connection, mechanism: str) -> LoginVerdict | None:
    """Return a refusal if the broker does not offer ``mechanism``, else None."""
    answer = conn.request(SASL_HANDSHAKE, _string(mechanism))
    error_code, count = struct.unpack_from(">hi", answer)
    offset, offered = 6, []
    for _ in range(max(count, 0)):
        (length,) = struct.unpack_from(">h", answer, offset)
        offered.append(answer[offset + 2 : offset + 2 + length].decode())
        offset += 2 + length
    if error_code == UNSUPPORTED_SASL_MECHANISM:
        return LoginVerdict(False, f"the broker offers {offered}, not {mechanism}")
    if error_code:
        return LoginVerdict(False, f"SASL handshake refused (error code {error_code})")
    return None


def _authenticate(conn: _Connection, token: bytes) -> tuple[int, str, bytes]:
    """Send one SASL token; return (error code, error message, the broker's token)."""
    answer = conn.request(SASL_AUTHENTICATE, struct.pack(">i", len(token)) + token)
    error_code, message_length = struct.unpack_from(">hh", answer)
    offset = 4
    message = ""
    if message_length >= 0:
        message = answer[offset : offset + message_length].decode("utf-8", "replace")
        offset += message_length
    (token_length,) = struct.unpack_from(">i", answer, offset)
    offset += 4
    reply = answer[offset : offset + max(token_length, 0)]
    return error_code, message, reply


def _scram(conn: _Connection, algorithm: str, username: str, password: str) -> LoginVerdict:
    nonce = secrets.token_urlsafe(24)
    name = username.replace("=", "=3D").replace(",", "=2C")
    client_first_bare = f"n={name},r={nonce}"
    error, message, server_first_raw = _authenticate(conn, f"n,,{client_first_bare}".encode())
    if error:
        return LoginVerdict(False, message or f"error code {error}")
    server_first = server_first_raw.decode()
    fields = dict(part.split("=", 1) for part in server_first.split(","))
    if not fields.get("r", "").startswith(nonce):
        return LoginVerdict(False, "the broker's SCRAM nonce does not extend ours")
    salted = hashlib.pbkdf2_hmac(
        algorithm, password.encode(), base64.b64decode(fields["s"]), int(fields["i"])
    )
    client_key = hmac.digest(salted, b"Client Key", algorithm)
    stored_key = hashlib.new(algorithm, client_key).digest()
    final_without_proof = f"c=biws,r={fields['r']}"
    auth_message = f"{client_first_bare},{server_first},{final_without_proof}".encode()
    signature = hmac.digest(stored_key, auth_message, algorithm)
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True)))
    error, message, server_final = _authenticate(
        conn, f"{final_without_proof},p={proof.decode()}".encode()
    )
    if error:
        return LoginVerdict(False, message or f"error code {error}")
    server_key = hmac.digest(salted, b"Server Key", algorithm)
    expected = base64.b64encode(hmac.digest(server_key, auth_message, algorithm)).decode()
    if not hmac.compare_digest(server_final.decode(), f"v={expected}"):
        return LoginVerdict(False, "the broker's SCRAM signature is wrong (not our broker?)")
    return LoginVerdict(True)


def probe_login(
    host: str,
    port: int,
    mechanism: str,
    username: str,
    password: str,
    ssl_context: ssl.SSLContext | None = None,
    timeout_s: float = 10.0,
) -> LoginVerdict:
    """Return whether the broker at ``host:port`` accepts this SASL login.

    Raises ``OSError`` (including ``ssl.SSLError`` and ``TimeoutError``) when the broker
    cannot be reached or the connection breaks: that is not a verdict on the login.
    """
    if mechanism not in {"PLAIN", *_HASHES}:
        msg = f"unsupported SASL mechanism {mechanism!r}"
        raise ValueError(msg)
    sock = socket.create_connection((host, port), timeout=timeout_s)
    try:
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname=host)
        conn = _Connection(sock)
        refused = _handshake(conn, mechanism)
        if refused is not None:
            return refused
        if mechanism == "PLAIN":
            error, message, _ = _authenticate(conn, f"\0{username}\0{password}".encode())
            return LoginVerdict(not error, message if error else "")
        return _scram(conn, _HASHES[mechanism], username, password)
    finally:
        sock.close()
