"""The shared transport: error decoding, retry rules, timeouts (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from coder_migrate.errors import (
    CoderAPIError,
    CoderAuthError,
    CoderConflict,
    CoderNotFound,
    CoderUnavailable,
    CoderUnsupported,
)
from coder_migrate.providers.coder import CoderV1Client, CoderV2Client, CoderVersion, RetryPolicy
from coder_migrate.providers.coder.transport import CoderTransport, decode_error

FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002)
Handler = Callable[[httpx.Request], httpx.Response]


def transport(handler: Handler, style: str = "v2") -> CoderTransport:
    return CoderTransport(
        "http://primary.test",
        auth_headers={"Coder-Session-Token": "tok"},
        error_style=style,  # type: ignore[arg-type]
        retry=FAST,
        transport=httpx.MockTransport(handler),
    )


def send(
    handler: Handler, method: str = "GET", path: str = "/api/x", style: str = "v2"
) -> httpx.Response:
    async def main() -> httpx.Response:
        http = transport(handler, style)
        try:
            return await http.request(method, path, params={"q": "secret-query"})
        finally:
            await http.aclose()

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("status", "body", "style", "error_class", "text"),
    [
        (
            401,
            {"error": {"msg": "bad token", "code": "unauthorized", "details": None}},
            "v1",
            CoderAuthError,
            "bad token",
        ),
        (404, {"error": {"msg": "nope", "code": "not_found"}}, "v1", CoderNotFound, "nope"),
        (
            409,
            {"message": "exists", "detail": "name taken"},
            "v2",
            CoderConflict,
            "exists (name taken)",
        ),
        (
            403,
            {"message": "Workspace Proxy is a Premium feature. Contact sales!"},
            "v2",
            CoderUnsupported,
            "Premium",
        ),
        (403, {"message": "Forbidden."}, "v2", CoderAuthError, "Forbidden."),
        (
            400,
            {"error": {"msg": "bad", "code": "bad_request", "details": [{"field": "name"}]}},
            "v1",
            CoderAPIError,
            '"field": "name"',
        ),
        (500, {"message": "boom"}, "v2", CoderUnavailable, "boom"),
    ],
)
def test_error_bodies_are_decoded(
    status: int, body: object, style: str, error_class: type[CoderAPIError], text: str
) -> None:
    with pytest.raises(error_class) as caught:
        send(lambda _r: httpx.Response(status, json=body), style=style)
    error = caught.value
    assert type(error) is error_class
    assert (error.method, error.path, error.status) == ("GET", "/api/x", status)
    assert text in str(error)
    assert "secret-query" not in str(error)


def test_v1_error_code_is_kept() -> None:
    response = httpx.Response(404, json={"error": {"msg": "m", "code": "not_found"}})
    assert decode_error(response, "GET", "/p", "v1").code == "not_found"


def test_html_error_bodies_are_not_quoted() -> None:
    response = httpx.Response(502, html="<html>" + "x" * 5000 + "</html>")
    error = decode_error(response, "GET", "/p", "v2")
    assert isinstance(error, CoderUnavailable)
    assert "non-JSON error body" in str(error)


def test_long_error_text_is_shortened_and_redacted() -> None:
    response = httpx.Response(400, text="token=abc123secretvalue " + "y" * 400)
    error = decode_error(response, "POST", "/p", "v1")
    assert "abc123secretvalue" not in str(error)
    assert len(str(error)) < 300


@pytest.mark.parametrize("status", [502, 503, 504])
def test_get_retries_on_gateway_errors(status: int) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(status if len(calls) < 3 else 200, json={})

    assert send(handler).status_code == 200
    assert len(calls) == 3


def test_500_is_not_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500, json={"message": "x"})

    with pytest.raises(CoderUnavailable):
        send(handler)
    assert len(calls) == 1


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_non_idempotent_calls_are_not_retried_on_503_or_read_errors(method: str) -> None:
    calls = []

    def unavailable(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503, json={"message": "x"})

    with pytest.raises(CoderUnavailable):
        send(unavailable, method=method)
    assert len(calls) == 1

    def read_error(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadError("connection reset", request=request)

    with pytest.raises(CoderUnavailable):
        send(read_error, method=method)
    assert len(calls) == 2


def test_connect_errors_are_retried_even_for_post() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(201, json={})

    assert send(handler, method="POST").status_code == 201
    assert len(calls) == 2


def test_retries_are_bounded_by_attempts() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(CoderUnavailable, match=r"ReadTimeout\) after 3 attempt"):
        send(handler)
    assert len(calls) == 3


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(attempts=6, base_delay=0.5, max_delay=2.0, multiplier=2)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 2.0, 2.0]


def test_auth_headers_per_generation() -> None:
    seen: dict[str, str] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(request.headers)
        return httpx.Response(200, json={"version": "v2.1.0"}, headers={"coder-version": "1.21.3"})

    async def main() -> None:
        mock = httpx.MockTransport(handler)
        async with CoderV1Client("http://p", "v1tok", transport=mock) as v1:
            assert (await v1.version()).raw == "1.21.3"
        assert seen["session-token"] == "v1tok"
        async with CoderV2Client("http://p", "v2tok", transport=mock) as v2:
            assert (await v2.buildinfo()).version == "v2.1.0"
        assert seen["coder-session-token"] == "v2tok"

    asyncio.run(main())


def test_unexpected_shapes_are_api_errors() -> None:
    async def main() -> None:
        mock = httpx.MockTransport(lambda _r: httpx.Response(200, json={"regions": "nope"}))
        async with CoderV2Client("http://p", "t", transport=mock) as v2:
            await v2.list_proxies()

    with pytest.raises(CoderAPIError, match="unexpected response shape"):
        asyncio.run(main())


def test_empty_satellite_data_is_an_empty_list() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api":
            return httpx.Response(200, json={}, headers={"coder-version": "1.21.0"})
        return httpx.Response(200, json={"data": None})

    async def main() -> list[object]:
        async with CoderV1Client("http://p", "t", transport=httpx.MockTransport(handler)) as v1:
            return list(await v1.list_satellites())

    assert asyncio.run(main()) == []


@pytest.mark.parametrize(
    ("raw", "expected", "at_least_1_21"),
    [
        ("1.21.0", (1, 21, 0), True),
        ("v1.21.2+abc", (1, 21, 2), True),
        ("1.20.4", (1, 20, 4), False),
        ("1.22.0-rc.1", (1, 22, 0), True),
        (None, (None, None, None), False),
        ("", (None, None, None), False),
    ],
)
def test_version_parsing(
    raw: str | None, expected: tuple[object, ...], at_least_1_21: bool
) -> None:
    version = CoderVersion.parse(raw)
    assert (version.major, version.minor, version.patch) == expected
    assert version.at_least(1, 21) is at_least_1_21
    if not raw:
        assert version.raw == "unknown"


def test_networking_v2_on_a_1_22_primary() -> None:
    provider = {"id": "p1", "name": "p", "status": "ready"}
    patches = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api":
            return httpx.Response(200, json={}, headers={"coder-version": "1.22.1"})
        if request.method == "PATCH":
            patches.append(request)
        return httpx.Response(200, json=provider)

    async def main(enabled: bool) -> object:
        async with CoderV1Client("http://p", "t", transport=httpx.MockTransport(handler)) as v1:
            return await v1.set_networking_v2("p1", enabled)

    assert asyncio.run(main(True)) is not None
    with pytest.raises(CoderUnsupported, match=r"cannot be turned off from Coder 1\.22"):
        asyncio.run(main(False))
    assert patches == []
