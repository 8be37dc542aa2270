"""A browser with no cookie for the workspace proxy logs in through the primary and reaches
the app: the login hand-off of Coder v2 (coderd/workspaceapps.go ``workspaceApplicationAuth``
on the primary, coderd/workspaceapps/proxy.go ``handleAPIKeySmuggling`` on the proxy).

The browser is httpx with its cookie jar; a transport sends every ``*.apps.eu.lab.internal``
host to the proxy's loopback port, as DNS would. Each hop is asserted, so a loop (the proxy
ignoring the hand-off and redirecting again) fails at the hop where it happens.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from coder_migrate.providers.coder.app_tokens import API_KEY_QUERY_PARAMETER
from coder_migrate.proxy.auth import PATH_APP_SESSION_COOKIE, subdomain_session_cookie
from tests.fixtures.coderd import CoderEmulator
from tests.fixtures.proxy import ProxyFactory, RunningProxy, workspace_proxy_env

pytestmark = pytest.mark.integration

WILDCARD = "*.apps.eu.lab.internal"
OWNER = "platform-bot"
WORKSPACE = "migration-check-us-east"


class LoopbackDNS(httpx.HTTPTransport):
    """Resolves the proxy's wildcard names to 127.0.0.1 (the Host header is kept)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host.endswith(WILDCARD[1:]):
            request = httpx.Request(
                request.method,
                request.url.copy_with(host="127.0.0.1"),
                headers=request.headers,
                stream=request.stream,
            )
        return super().handle_request(request)


@pytest.fixture
def wsproxy(coderd_v2: CoderEmulator, proxy_factory: ProxyFactory) -> RunningProxy:
    return proxy_factory(workspace_proxy_env(coderd_v2, "login"))


def hop(browser: httpx.Client, url: str, status: int = 303) -> httpx.Response:
    response = browser.get(url)
    assert response.status_code == status, (url, response.status_code, response.text[:300])
    return response


def login_at_primary(browser: httpx.Client, coderd: CoderEmulator, login_url: str) -> str:
    """What the dashboard's login form does: a session cookie on the primary, then on to
    the page the login redirect names."""
    parts = urlsplit(login_url)
    assert f"{parts.scheme}://{parts.netloc}" == coderd.url and parts.path == "/login"
    query = parse_qs(parts.query)
    assert "message" in query
    token = coderd.user_token(OWNER)
    browser.cookies.set("coder_session_token", token, domain="127.0.0.1")
    return coderd.url + query["redirect"][0]


def dance(browser: httpx.Client, coderd: CoderEmulator, app_url: str) -> list[httpx.Response]:
    """Follow the whole dance from a cookie-less request to the app's answer."""
    first = hop(browser, app_url)
    to_primary = first.headers["location"]
    assert to_primary.startswith(f"{coderd.url}/api/v2/applications/auth-redirect?")
    assert parse_qs(urlsplit(to_primary).query)["redirect_uri"] == [app_url]
    to_login = hop(browser, to_primary).headers["location"]
    handed = hop(browser, login_at_primary(browser, coderd, to_login))
    back = handed.headers["location"]
    back_query = parse_qs(urlsplit(back).query)
    assert back.startswith(app_url.split("?")[0]) and API_KEY_QUERY_PARAMETER in back_query
    with_cookie = hop(browser, back)
    clean = with_cookie.headers["location"]
    assert API_KEY_QUERY_PARAMETER not in clean and clean.startswith("/")
    app = hop(browser, str(httpx.URL(app_url).join(clean)), 200)
    return [first, handed, with_cookie, app]


def test_a_cookieless_browser_logs_in_and_reaches_a_subdomain_app(
    wsproxy: RunningProxy, coderd_v2: CoderEmulator
) -> None:
    host = f"code-server--main--{WORKSPACE}--{OWNER}{WILDCARD[1:]}"
    app_url = f"http://{host}:{wsproxy.port}/hello/world?x=1&y=2"
    with httpx.Client(transport=LoopbackDNS(), timeout=30) as browser:
        first, _handed, with_cookie, app = dance(browser, coderd_v2, app_url)
        assert first.cookies == {}  # nothing for the app domain before the dance
        set_cookie = with_cookie.headers["set-cookie"]
        name = subdomain_session_cookie(WILDCARD)
        assert set_cookie.startswith(name + "=")
        assert "Domain=.apps.eu.lab.internal" in set_cookie and "HttpOnly" in set_cookie
        assert "SameSite=Lax" in set_cookie and "Max-Age" not in set_cookie
        assert with_cookie.headers["location"] == "/hello/world?x=1&y=2"
        echoed: dict[str, Any] = app.json()
        assert (echoed["path"], echoed["query"]) == ("/hello/world", "x=1&y=2")
        # The app never sees the session or the hand-off.
        assert name not in str(echoed["headers"]) and API_KEY_QUERY_PARAMETER not in str(echoed)
        # Another app of the same user on the wildcard: no second dance.
        other = f"http://8080--main--{WORKSPACE}--{OWNER}{WILDCARD[1:]}:{wsproxy.port}/p"
        assert browser.get(other).status_code == 200


def test_a_cookieless_browser_logs_in_to_a_path_app(
    wsproxy: RunningProxy, coderd_v2: CoderEmulator
) -> None:
    app_url = f"{wsproxy.url}/@{OWNER}/{WORKSPACE}.main/apps/code-server/deep/x?q=1"
    with httpx.Client(transport=LoopbackDNS(), timeout=30) as browser:
        *_rest, with_cookie, app = dance(browser, coderd_v2, app_url)
        set_cookie = with_cookie.headers["set-cookie"]
        assert set_cookie.startswith(PATH_APP_SESSION_COOKIE + "=") and "Domain" not in set_cookie
        assert app.json()["path"] == "/deep/x"


def test_a_forged_or_replayed_hand_off_is_refused(
    wsproxy: RunningProxy, coderd_v2: CoderEmulator
) -> None:
    host = f"code-server--main--{WORKSPACE}--{OWNER}{WILDCARD[1:]}"
    forged = f"http://{host}:{wsproxy.port}/?{API_KEY_QUERY_PARAMETER}=eyJhbGciOi.x.y.z.w"
    with httpx.Client(transport=LoopbackDNS(), timeout=30) as browser:
        refused = browser.get(forged)
        assert refused.status_code == 400 and "Could not decrypt API key" in refused.text
        assert "set-cookie" not in refused.headers


def test_the_primary_hands_off_as_coderd_does(
    wsproxy: RunningProxy, coderd_v2: CoderEmulator
) -> None:
    """coder/coder coderd/workspaceapps.go ``workspaceApplicationAuth`` (f16e0f69: missing
    ``redirect_uri`` 400, ``ValidWorkspaceAppHostname`` 400 "Invalid redirect_uri.", scheme
    forced to the proxy's, ``q.Set`` + ``Encode``, 303) and coderd/workspaceapps/token.go
    ``EncryptedAPIKeyPayload.Fill`` (iss coderd, aud wsproxy, exp +1 min, nbf -1 min)."""
    session = {"Coder-Session-Token": coderd_v2.user_token(OWNER)}
    url = f"{coderd_v2.url}/api/v2/applications/auth-redirect"
    missing = httpx.get(url, headers=session)
    assert missing.status_code == 400
    assert missing.json()["message"] == "Missing redirect_uri query parameter."
    elsewhere = httpx.get(url, params={"redirect_uri": "http://evil.example/"}, headers=session)
    assert elsewhere.status_code == 400 and elsewhere.json()["message"] == "Invalid redirect_uri."
    app = f"https://code-server--main--{WORKSPACE}--{OWNER}{WILDCARD[1:]}:{wsproxy.port}/a?z=1&b=2"
    handed = httpx.get(url, params={"redirect_uri": app}, headers=session)
    assert handed.status_code == 303
    location = handed.headers["location"]
    assert location.startswith("http://")  # the proxy's access URL is http: scheme forced
    query = urlsplit(location).query
    assert [pair.split("=")[0] for pair in query.split("&")] == [
        "b",
        API_KEY_QUERY_PARAMETER,
        "z",
    ]
    keys = httpx.get(
        f"{coderd_v2.url}/api/v2/workspaceproxies/me/crypto-keys",
        params={"feature": "workspace_apps_api_key"},
        headers={
            "Coder-External-Proxy-Token": workspace_proxy_env(coderd_v2, "keys")[
                "CODER_PROXY_SESSION_TOKEN"
            ]
        },
    ).json()["crypto_keys"]
    from joserfc import jwe
    from joserfc.jwk import OctKey

    encrypted = parse_qs(query)[API_KEY_QUERY_PARAMETER][0]
    key = max(keys, key=lambda k: k["sequence"])
    claims = json.loads(
        jwe.decrypt_compact(
            encrypted, OctKey.import_key(bytes.fromhex(key["secret"])), algorithms=JWE
        ).plaintext
        or b"{}"
    )
    assert (claims["iss"], claims["aud"]) == ("coderd", "wsproxy")
    assert claims["exp"] - claims["nbf"] == 120 and claims["api_key"]


JWE = ["A256GCMKW", "A256GCM"]
