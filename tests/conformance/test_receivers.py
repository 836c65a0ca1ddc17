"""Both transports against real servers: the Go receiver of bench/ and an aiohttp server.

Each request carries a fresh delivery id; the receivers record what arrived, so every count
below is exact: nothing here may be sent twice."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from consumer.signing import sign
from consumer.transport import EXCERPT_BYTES

from .conftest import Post
from .servers import GO_PATHS, SECRET, AiohttpReceiver, GoReceiver, aiohttp_receiver, go_receiver


@pytest.fixture(scope="module")
def go() -> Iterator[GoReceiver]:
    with go_receiver() as receiver:
        yield receiver


@dataclass
class Target:
    base: str
    arrived: Callable[[str], Awaitable[list[str]]]  # delivery ids starting with a prefix


async def _go_arrivals(base: str, prefix: str) -> list[str]:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/_receipts") as response:
        text = await response.text()
    ids = (line.split("\t")[1] for line in text.splitlines())
    return [i for i in ids if i.startswith(prefix)]


@pytest.fixture(params=["go", "aiohttp"])
async def target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    if request.param == "go":
        go: GoReceiver = request.getfixturevalue("go")
        yield Target(go.base, lambda prefix: _go_arrivals(go.base, prefix))
        return
    async with aiohttp_receiver() as state:
        _like_the_go_receiver(state)

        async def arrived(prefix: str) -> list[str]:
            ids = (headers.get("X-gio-delivery-id", "") for _, headers, _, _ in state.seen)
            return [i for i in ids if i.startswith(prefix)]

        yield Target(state.base, arrived)


def _like_the_go_receiver(state: AiohttpReceiver) -> None:
    async def hang(request: web.Request) -> web.StreamResponse:
        await asyncio.Event().wait()  # until the client gives up and the server is cleaned up
        raise AssertionError("unreachable")

    state.streams["/hang"] = hang
    for code in (503, 404):
        state.responses[f"/status/{code}"] = lambda code=code: web.Response(status=code, text="ok")
    for path in GO_PATHS:
        state.streams[path] = _verifying(state)


def _verifying(state: AiohttpReceiver) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(status=200 if state.seen[-1][3] else 401, text="ok")

    return answer


def signed(body: bytes, delivery: str) -> dict[str, str]:
    return {"X-gio-signature": sign(body, SECRET), "X-gio-delivery-id": delivery}


async def test_a_signed_post_arrives_once_and_verifies(target: Target, post: Post) -> None:
    prefix = uuid.uuid4().hex
    body = '{"name":"a","templateParam":{"t":"双十一"}}'.encode()
    answer = await post(target.base + GO_PATHS[0], body, signed(body, f"{prefix}-1"))
    assert (answer.status, answer.excerpt) == (200, b"ok")
    assert await target.arrived(prefix) == [f"{prefix}-1"]


async def test_a_wrong_signature_is_refused_by_the_receiver(target: Target, post: Post) -> None:
    # The receivers check the signature over the bytes that arrived: a transport that changed
    # one byte of the body would be refused like this.
    body = b'{"n":1}'
    answer = await post(target.base + GO_PATHS[0], body, signed(b'{"n":2}', "wrong"))
    assert answer.status == 401


async def test_many_concurrent_posts_each_arrive_exactly_once(target: Target, post: Post) -> None:
    prefix = uuid.uuid4().hex
    per_worker, workers = 10, 64  # per path, as the bench's 3 x 64 connections

    async def worker(path: str, w: int) -> list[int]:
        statuses = []
        for n in range(per_worker):
            body = b'{"worker":%d,"n":%d}' % (w, n)
            answer = await post(target.base + path, body, signed(body, f"{prefix}-{path}-{w}-{n}"))
            statuses.append(answer.status)
        return statuses

    results = await asyncio.gather(*(worker(p, w) for p in GO_PATHS for w in range(workers)))
    total = len(GO_PATHS) * workers * per_worker
    assert [s for statuses in results for s in statuses] == [200] * total
    arrived = await target.arrived(prefix)
    assert len(arrived) == len(set(arrived)) == total  # none lost, none sent twice


@pytest.mark.parametrize("status", [503, 404])
async def test_an_error_status_is_an_answer(target: Target, post: Post, status: int) -> None:
    answer = await post(f"{target.base}/status/{status}")
    assert (answer.status, answer.excerpt) == (status, b"ok")


async def test_a_receiver_that_never_answers_is_cut_off_at_the_deadline(
    target: Target, post: Post
) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await post(f"{target.base}/hang", timeout=0.5)
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 2.0, f"{elapsed:.2f}s"


# The aiohttp server alone: it can count connections and shape its answers.


@pytest.fixture
async def server() -> AsyncIterator[AiohttpReceiver]:
    async with aiohttp_receiver() as state:
        yield state


async def test_sequential_posts_reuse_one_connection(server: AiohttpReceiver, post: Post) -> None:
    for _ in range(20):
        assert (await post(f"{server.base}/hooks/x")).status == 200
    assert len(server.seen) == 20
    assert len(server.connections) == 1


async def test_connection_close_is_honoured(server: AiohttpReceiver, post: Post) -> None:
    server.responses["/close"] = lambda: web.Response(text="ok", headers={"Connection": "close"})
    for _ in range(3):
        assert (await post(f"{server.base}/close")).status == 200
    assert len(server.connections) == 3


async def test_retry_after_and_status_are_passed_on(server: AiohttpReceiver, post: Post) -> None:
    server.responses["/busy"] = lambda: web.Response(
        status=429, text="slow down", headers={"Retry-After": "7"}
    )
    answer = await post(f"{server.base}/busy")
    assert (answer.status, answer.retry_after, answer.excerpt) == (429, "7", b"slow down")


async def test_a_redirect_is_an_answer_not_followed(server: AiohttpReceiver, post: Post) -> None:
    server.responses["/moved"] = lambda: web.Response(
        status=307, headers={"Location": f"{server.base}/elsewhere"}
    )
    assert (await post(f"{server.base}/moved")).status == 307
    assert [path for path, *_ in server.seen] == ["/moved"]


async def test_no_content_keeps_the_connection(server: AiohttpReceiver, post: Post) -> None:
    server.responses["/empty"] = lambda: web.Response(status=204)
    for _ in range(3):
        answer = await post(f"{server.base}/empty")
        assert (answer.status, answer.excerpt) == (204, b"")
    assert len(server.connections) == 1


async def test_a_chunked_answer_is_read_and_the_connection_kept(
    server: AiohttpReceiver, post: Post
) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b"accepted", b" in ", b"parts"):
            await response.write(part)
        await response.write_eof()
        return response

    server.streams["/chunked"] = chunked
    for _ in range(3):
        answer = await post(f"{server.base}/chunked")
        assert answer.status == 200
        assert answer.excerpt
        assert b"accepted in parts".startswith(answer.excerpt)
    assert len(server.connections) == 1


async def test_a_large_answer_is_cut_to_the_excerpt(server: AiohttpReceiver, post: Post) -> None:
    text = "".join(f"{n:08d}" for n in range(20_000))  # 160 kB, every offset distinguishable
    server.responses["/large"] = lambda: web.Response(text=text)
    answer = await post(f"{server.base}/large")
    assert answer.status == 200
    assert 0 < len(answer.excerpt) <= EXCERPT_BYTES
    assert text.encode().startswith(answer.excerpt)
    # The connection was not read to its end, so it is not reused: the next one is new.
    assert (await post(f"{server.base}/hooks/x")).status == 200
    assert len(server.connections) == 2


async def test_headers_and_body_arrive_as_given(server: AiohttpReceiver, post: Post) -> None:
    body = '{"名":"双十一"}'.encode()
    headers = {"X-gio-delivery-id": "d-1", "Authorization": "Basic Zzpw", "X-Empty": ""}
    assert (await post(f"{server.base}/hooks/a?source=gio&x=%2F", body, headers)).status == 200
    [(path, seen, received, _)] = server.seen
    assert path == "/hooks/a"
    assert received == body
    assert seen["X-gio-delivery-id"] == "d-1"
    assert seen["Authorization"] == "Basic Zzpw"
    assert seen["Content-Length"] == str(len(body))
    assert seen["Host"] == server.base.removeprefix("http://")
