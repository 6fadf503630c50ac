"""Hostile HTTP input on the service API (issue 7): oversized request lines
and headers, header floods, broken chunked encoding, request smuggling
(Content-Length with Transfer-Encoding), pipelining abuse and slow clients.

Each case asserts the exact status with the spec's error body
({"Message":"ErrorCode:{Code};...","ExceptionMessage":...}), that an
error closes the connection (RFC 9112 §6.3: a message whose framing is in
doubt must not be forwarded or followed; we close), that nothing sent after
the bad request is answered, and that another client is still served.
Memory is bounded where a client could make the server hold data.

One hub serves the module, with --http-request-timeout-ms 1000 and
--http-idle-timeout-ms 1500 so the slow-client cases take about a second.
The catalogue with decisions: docs/RELIABILITY.md, "Hostile input".
"""

import json
import re
import socket
import time

import pytest

from hostile_util import (assert_grew_at_most, iothubd_only, rss_kib, start_module_broker,
                          stop_module_broker)
from service_client import ServiceClient

pytestmark = iothubd_only

REQUEST_TIMEOUT_MS = 1000
IDLE_TIMEOUT_MS = 1500


@pytest.fixture(scope="module")
def hub():
    b, d = start_module_broker(http=True, extra_args=[
        "--http-request-timeout-ms", str(REQUEST_TIMEOUT_MS),
        "--http-idle-timeout-ms", str(IDLE_TIMEOUT_MS)])
    b.auth = ServiceClient(b).auth()
    yield b
    stop_module_broker(b, d)


def still_served(hub):
    """A fresh, well-behaved client gets its answer."""
    svc = ServiceClient(hub)
    r = svc.request("GET", "/statistics/devices")
    assert r.status == 200, r


# ------------------------------------------------------------ raw exchanges
def exchange(hub, data, timeout=5.0, pace=None):
    """Sends `data` (all at once, or one byte every `pace` seconds) and reads
    until the server closes. Returns (bytes received, closed, seconds)."""
    s = socket.create_connection(("127.0.0.1", hub.http_port), timeout=timeout)
    t0 = time.monotonic()
    try:
        try:
            if pace is None:
                s.sendall(data)
            else:
                for i in range(len(data)):
                    s.sendall(data[i:i + 1])
                    time.sleep(pace)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed early: read what it said
        out, closed = b"", False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            out += chunk
        return out, closed, time.monotonic() - t0
    finally:
        s.close()


def responses(raw):
    """[(status, headers dict, body bytes)] for each response in `raw`."""
    out = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, "incomplete response head: %r" % raw[:200]
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in
                   (line.split(":", 1) for line in lines[1:])}
        n = int(headers.get("content-length", "0"))
        out.append((status, headers, rest[:n]))
        raw = rest[n:]
    return out


def assert_error_and_close(hub, data, status, code, **kw):
    """Exactly one response: `status` with the spec's error body for `code`,
    "Connection: close", then the server closes."""
    out, closed, _ = exchange(hub, data, **kw)
    got = responses(out)
    assert [r[0] for r in got] == [status], out[:400]
    _, headers, body = got[0]
    assert headers.get("connection") == "close", headers
    assert headers.get("x-ms-request-id"), headers
    doc = json.loads(body)
    assert doc["Message"].startswith("ErrorCode:%s;" % code), doc
    assert "ExceptionMessage" in doc, doc
    assert closed, "connection left open after %d" % status
    still_served(hub)


def get(hub, path="/statistics/devices", extra=b""):
    return (b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: " +
            hub.auth.encode() + b"\r\n" + extra + b"\r\n")


def post(hub, headers, body):
    return (b"PUT /devices/hostile-x HTTP/1.1\r\nHost: x\r\nAuthorization: " + hub.auth.encode() +
            b"\r\nContent-Type: application/json\r\n" + headers + b"\r\n" + body)


# ------------------------------------------------------------ the catalogue
# name -> (request bytes, status, ErrorCode); each is followed by a valid GET
# that must NOT be answered (nothing after a framing error is trusted).
TE_CL = b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"
CASES = {
    # oversized request line and headers (16 KiB budget, 100 fields) -> 431
    "request_line_20k": (lambda h: b"GET /devices?x=" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
                         431, "RequestHeaderFieldsTooLarge"),
    "one_header_20k": (lambda h: get(h, extra=b"X-Big: " + b"v" * 20000 + b"\r\n"),
                       431, "RequestHeaderFieldsTooLarge"),
    "header_line_without_end_64k": (
        lambda h: b"GET / HTTP/1.1\r\nX-Endless: " + b"v" * 65536,
        431, "RequestHeaderFieldsTooLarge"),
    "header_count_101": (lambda h: get(h, extra=b"".join(b"X-%d: 1\r\n" % i for i in range(99))),
                         431, "RequestHeaderFieldsTooLarge"),
    "header_flood_5000": (lambda h: get(h, extra=b"".join(b"X: %d\r\n" % i for i in range(5000))),
                          431, "RequestHeaderFieldsTooLarge"),
    # framing the parser refuses -> 400
    "chunk_size_not_hex": (lambda h: post(h, b"Transfer-Encoding: chunked\r\n", b"zz\r\nab\r\n0\r\n\r\n"),
                           400, "ArgumentInvalid"),
    "chunk_size_overflow": (
        lambda h: post(h, b"Transfer-Encoding: chunked\r\n", b"f" * 20 + b"\r\nab\r\n0\r\n\r\n"),
        400, "ArgumentInvalid"),
    "chunk_data_without_crlf": (
        lambda h: post(h, b"Transfer-Encoding: chunked\r\n", b"2\r\n{}XX0\r\n\r\n"),
        400, "ArgumentInvalid"),
    "chunked_body_over_1mib": (
        lambda h: post(h, b"Transfer-Encoding: chunked\r\n",
                       (b"8000\r\n" + b" " * 0x8000 + b"\r\n") * 40 + b"0\r\n\r\n"),
        413, "MessageTooLarge"),
    # request smuggling (RFC 9112 §6.1, §6.3)
    "content_length_with_transfer_encoding": (lambda h: post(h, TE_CL, b"0\r\n\r\n"),
                                              400, "ArgumentInvalid"),
    "transfer_encoding_with_content_length": (
        lambda h: post(h, b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"),
        400, "ArgumentInvalid"),
    "two_content_lengths": (lambda h: post(h, b"Content-Length: 2\r\nContent-Length: 7\r\n", b"{}"),
                            400, "ArgumentInvalid"),
    "transfer_encoding_not_chunked": (lambda h: post(h, b"Transfer-Encoding: gzip\r\n", b"{}"),
                                      400, "ArgumentInvalid"),
    "content_length_not_a_number": (lambda h: post(h, b"Content-Length: 2x\r\n", b"{}"),
                                    400, "ArgumentInvalid"),
    "content_length_negative": (lambda h: post(h, b"Content-Length: -1\r\n", b"{}"),
                                400, "ArgumentInvalid"),
    "space_before_colon": (lambda h: post(h, b"Content-Length : 2\r\n", b"{}"),
                           400, "ArgumentInvalid"),
    "nul_in_header_value": (lambda h: get(h, extra=b"X-A: a\x00b\r\n"), 400, "ArgumentInvalid"),
    "garbage_request_line": (lambda h: b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\0" * 64,
                             400, "ArgumentInvalid"),
    # CR without LF: the lenient parser would take any byte for the LF
    "header_line_cr_without_lf": (lambda h: get(h, extra=b"X-A: 1\rContent-Length: 5\r\n"),
                                  400, "ArgumentInvalid"),
    "head_end_cr_without_lf": (lambda h: get(h)[:-2] + b"\r\rX", 400, "ArgumentInvalid"),
    "chunk_size_cr_without_lf": (
        lambda h: post(h, b"Transfer-Encoding: chunked\r\n", b"2\rX{}\r\n0\r\n\r\n"),
        400, "ArgumentInvalid"),
    "chunk_data_longer_than_size": (
        lambda h: post(h, b"Transfer-Encoding: chunked\r\n", b"1\r\n{}\r\n0\r\n\r\n"),
        400, "ArgumentInvalid"),
    "trailer_end_cr_without_lf": (
        lambda h: post(h, b"Transfer-Encoding: chunked\r\n", b"2\r\n{}\r\n0\r\n\rX"),
        400, "ArgumentInvalid"),
    "content_length_over_limit": (
        lambda h: post(h, b"Content-Length: 1073741824\r\n", b"{}"), 413, "MessageTooLarge"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_request_answered_and_closed(hub, name):
    build, status, code = CASES[name]
    assert_error_and_close(hub, build(hub) + get(hub), status, code)


def test_expect_continue_with_oversized_body_refused_before_body(hub):
    data = post(hub, b"Content-Length: 5000000\r\nExpect: 100-continue\r\n", b"")
    out, closed, _ = exchange(hub, data)
    assert [r[0] for r in responses(out)] == [413] and closed, out[:300]
    still_served(hub)


def test_valid_chunked_request_byte_by_byte_accepted(hub):
    """The strict framing check must not refuse a correct chunked body, however
    it is split: two chunks, an extension and a trailer, one byte per write."""
    body = b'{"deviceId":"hostile-chunked"}'
    chunked = (b"%x;ext=1\r\n" % 10 + body[:10] + b"\r\n" + b"%x\r\n" % (len(body) - 10) +
               body[10:] + b"\r\n0\r\nX-Trailer: t\r\n\r\n")
    head = (b"PUT /devices/hostile-chunked?api-version=2021-04-12 HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: " + hub.auth.encode() + b"\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    s = socket.create_connection(("127.0.0.1", hub.http_port), timeout=5)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(head)
        for i in range(len(chunked)):
            s.sendall(chunked[i:i + 1])
            time.sleep(0.002)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    finally:
        s.close()
    got = responses(out)
    assert [r[0] for r in got] == [201], out[:300]
    assert json.loads(got[0][2])["deviceId"] == "hostile-chunked"


# ------------------------------------------------------------ pipelining
def test_pipelined_requests_answered_in_order(hub):
    """500 pipelined requests in one write: 500 answers, in order."""
    n = 500
    paths = ["/statistics/devices" if i % 3 else "/no/such/%d" % i for i in range(n)]
    data = b"".join(get(hub, p) for p in paths)
    out, _, _ = exchange(hub, data + get(hub, extra=b"Connection: close\r\n"))
    statuses = [r[0] for r in responses(out)]
    assert statuses == [200 if i % 3 else 404 for i in range(n)] + [200]


def test_pipelining_client_that_never_reads_is_paused(hub):
    """A client pipelines ~40 MiB of requests and never reads an answer:
    the server stops reading it once 1 MiB of answers are queued, so the
    client's sends block; memory stays bounded, others are served."""
    before = rss_kib(hub)
    s = socket.create_connection(("127.0.0.1", hub.http_port), timeout=5)
    req = get(hub)
    burst = req * (1 << 20 // len(req) + 1)
    sent, total = 0, 40 << 20
    s.settimeout(0.5)
    try:
        while sent < total:
            try:
                sent += s.send(burst)
            except socket.timeout:
                break
        assert sent < total, "server read 40 MiB of requests it could not answer"
        assert_grew_at_most(hub, before, 16 * 1024, "unread pipelined answers")
        still_served(hub)
    finally:
        s.close()
    still_served(hub)


# ------------------------------------------------------------ slow clients
def test_slowloris_headers_408_at_request_timeout(hub):
    """Headers trickled a byte every 50 ms: 408 RequestTimeout once the
    whole request has taken --http-request-timeout-ms, then closed."""
    data = get(hub, extra=b"X-Slow: " + b"z" * 200 + b"\r\n")
    out, closed, took = exchange(hub, data[:60], pace=0.05, timeout=3)
    got = responses(out)
    assert [r[0] for r in got] == [408] and closed, out[:300]
    assert json.loads(got[0][2])["Message"].startswith("ErrorCode:RequestTimeout;")
    assert REQUEST_TIMEOUT_MS / 1000 - 0.1 < took < REQUEST_TIMEOUT_MS / 1000 + 2.5, took
    still_served(hub)


def test_slow_body_408_at_request_timeout(hub):
    data = post(hub, b"Content-Length: 100\r\n", b"")
    s = socket.create_connection(("127.0.0.1", hub.http_port), timeout=5)
    try:
        t0 = time.monotonic()
        s.sendall(data)
        for _ in range(40):  # 2 s of one body byte every 50 ms
            try:
                s.sendall(b" ")
            except OSError:
                break
            time.sleep(0.05)
        s.settimeout(3)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        assert [r[0] for r in responses(out)] == [408], out[:300]
        assert time.monotonic() - t0 < REQUEST_TIMEOUT_MS / 1000 + 2.5
    finally:
        s.close()
    still_served(hub)


def test_idle_connections_closed_silently(hub):
    """200 connections that never send a byte: closed at the idle timeout
    without an answer; memory bounded."""
    before = rss_kib(hub)
    socks = [socket.create_connection(("127.0.0.1", hub.http_port), timeout=5) for _ in range(200)]
    try:
        still_served(hub)
        t0 = time.monotonic()
        for s in socks:
            s.settimeout(max(0.1, IDLE_TIMEOUT_MS / 1000 + 3 - (time.monotonic() - t0)))
            assert s.recv(1) == b""
        assert IDLE_TIMEOUT_MS / 1000 - 0.5 < time.monotonic() - t0 < IDLE_TIMEOUT_MS / 1000 + 3
        assert_grew_at_most(hub, before, 4 * 1024, "200 idle HTTP connections")
    finally:
        for s in socks:
            s.close()
    still_served(hub)


def test_many_answers_kept_in_order_after_an_error(hub):
    """Valid pipelined requests before a bad one are answered, the bad one
    gets its error, and what follows it is not (RFC 9112 §9.3.2)."""
    data = get(hub) + get(hub, "/no/such") + post(hub, TE_CL, b"0\r\n\r\n") + get(hub)
    out, closed, _ = exchange(hub, data)
    assert [r[0] for r in responses(out)] == [200, 404, 400] and closed
    assert re.search(rb"ErrorCode:ArgumentInvalid;", out)
