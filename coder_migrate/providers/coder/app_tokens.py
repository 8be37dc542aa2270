"""Signed app tokens (JWS) and encrypted API keys (JWE): the one implementation the primary
and the bundled proxy share, on joserfc.

Layout (docs/coder-emulator.md, partly ASSUMED):
- signed app token: compact JWS, ``alg`` HS512, header ``kid`` = the crypto key's sequence,
  HMAC key = ``bytes.fromhex(secret)`` of a ``workspace_apps_token`` key; valid one minute.
- encrypted API key (the ``coder_application_connect_api_key_35e783`` query parameter):
  compact JWE, ``alg`` A256GCMKW, ``enc`` A256GCM, ``kid`` = sequence, key =
  ``bytes.fromhex(secret)`` of a ``workspace_apps_api_key`` key; claims
  ``{"iss": "coderd", "aud": "wsproxy", "exp", "nbf", "api_key"}``; valid one minute.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from typing import Any, Literal

from joserfc import jwe, jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from pydantic import BaseModel, ConfigDict, ValidationError

from coder_migrate.errors import CoderAuthError
from coder_migrate.providers.coder.models_v2 import CryptoKey

__all__ = [
    "API_KEY_AUDIENCE",
    "API_KEY_FEATURE",
    "API_KEY_ISSUER",
    "API_KEY_QUERY_PARAMETER",
    "APP_TOKEN_FEATURE",
    "APP_TOKEN_LIFETIME_SECONDS",
    "AppRequest",
    "SignedAppToken",
    "decrypt_api_key",
    "encrypt_api_key",
    "sign_app_token",
    "verify_app_token",
]

APP_TOKEN_FEATURE = "workspace_apps_token"  # noqa: S105 - a feature name, not a secret
API_KEY_FEATURE = "workspace_apps_api_key"
API_KEY_QUERY_PARAMETER = "coder_application_connect_api_key_35e783"
API_KEY_AUDIENCE = "wsproxy"
API_KEY_ISSUER = "coderd"
APP_TOKEN_LIFETIME_SECONDS = 60
_JWS_ALGORITHMS = ["HS512"]
_JWE_ALGORITHMS = ["A256GCMKW", "A256GCM"]


class AppRequest(BaseModel):
    """What the user asked for (``app_request`` of issue-signed-app-token)."""

    model_config = ConfigDict(frozen=True)

    access_method: Literal["path", "subdomain", "terminal"]
    base_path: str = ""
    app_prefix: str = ""
    username_or_id: str = ""
    workspace_name_or_id: str = ""
    agent_name_or_id: str = ""
    app_slug_or_port: str = ""


class SignedAppToken(BaseModel):
    """The claims of a signed app token."""

    model_config = ConfigDict(frozen=True)

    exp: int
    iat: int
    request: AppRequest
    user_id: str
    username: str
    workspace_id: str
    agent_id: str
    app_url: str = ""


def _oct_key(key: CryptoKey) -> OctKey:
    return OctKey.import_key(bytes.fromhex(key.secret.get_secret_value()))


def _key_by_kid(keys: Sequence[CryptoKey], kid: Any, what: str) -> CryptoKey:
    key = next((k for k in keys if str(k.sequence) == str(kid)), None)
    if key is None:
        raise CoderAuthError(f"{what} names an unknown key")
    return key


def sign_app_token(
    claims: SignedAppToken | None = None,
    *,
    key: CryptoKey,
    request: AppRequest | None = None,
    user_id: str = "",
    username: str = "",
    workspace_id: str = "",
    agent_id: str = "",
    app_url: str = "",
    now: float | None = None,
) -> str:
    """Sign ``claims`` (or claims built from the keyword arguments) with ``key``."""
    if claims is None:
        if request is None:
            raise ValueError("sign_app_token needs claims or a request")
        issued = int(time.time() if now is None else now)
        claims = SignedAppToken(
            exp=issued + APP_TOKEN_LIFETIME_SECONDS,
            iat=issued,
            request=request,
            user_id=user_id,
            username=username,
            workspace_id=workspace_id,
            agent_id=agent_id,
            app_url=app_url,
        )
    header = {"alg": "HS512", "kid": str(key.sequence)}
    return jwt.encode(header, claims.model_dump(), _oct_key(key), algorithms=_JWS_ALGORITHMS)


def verify_app_token(
    token: str, keys: Sequence[CryptoKey], *, now: float | None = None
) -> SignedAppToken:
    """Check algorithm, signature (key chosen by ``kid``) and expiry; else ``CoderAuthError``."""
    try:
        header = jws.extract_compact(token.encode()).headers()
    except (JoseError, ValueError) as error:
        raise CoderAuthError("signed app token is malformed") from error
    if header.get("alg") != "HS512":
        raise CoderAuthError("signed app token uses an unexpected algorithm")
    key = _key_by_kid(keys, header.get("kid"), "signed app token")
    try:
        decoded = jwt.decode(token, _oct_key(key), algorithms=_JWS_ALGORITHMS)
    except (JoseError, ValueError) as error:
        raise CoderAuthError("signed app token signature is invalid") from error
    try:
        claims = SignedAppToken.model_validate(decoded.claims)
    except ValidationError as error:
        raise CoderAuthError("signed app token claims are malformed") from error
    if claims.exp <= (time.time() if now is None else now):
        raise CoderAuthError("signed app token has expired")
    return claims


def encrypt_api_key(session_token: str, *, key: CryptoKey, now: float | None = None) -> str:
    """The JWE a primary hands a proxy (through the browser) after login.

    Claims as coderd's ``EncryptedAPIKeyPayload.Fill`` sets them
    (coderd/workspaceapps/token.go): issuer ``coderd``, audience ``wsproxy``, expiry one
    minute ahead, not-before one minute back.
    """
    issued = int(time.time() if now is None else now)
    payload = {
        "iss": API_KEY_ISSUER,
        "aud": API_KEY_AUDIENCE,
        "exp": issued + APP_TOKEN_LIFETIME_SECONDS,
        "nbf": issued - APP_TOKEN_LIFETIME_SECONDS,
        "api_key": session_token,
    }
    header = {"alg": "A256GCMKW", "enc": "A256GCM", "kid": str(key.sequence)}
    return jwe.encrypt_compact(
        header, json.dumps(payload).encode(), _oct_key(key), algorithms=_JWE_ALGORITHMS
    )


def decrypt_api_key(value: str, keys: Sequence[CryptoKey], *, now: float | None = None) -> str:
    """The session token inside an encrypted API key; ``CoderAuthError`` if anything is off."""
    try:
        protected = value.split(".", 1)[0]
        header = json.loads(base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4)))
    except (ValueError, UnicodeDecodeError) as error:
        raise CoderAuthError("encrypted API key is malformed") from error
    if not isinstance(header, dict):
        raise CoderAuthError("encrypted API key is malformed")
    key = _key_by_kid(keys, header.get("kid"), "encrypted API key")
    try:
        decrypted = jwe.decrypt_compact(value, _oct_key(key), algorithms=_JWE_ALGORITHMS)
        payload = json.loads(decrypted.plaintext or b"")
    except (JoseError, ValueError) as error:
        raise CoderAuthError("encrypted API key cannot be decrypted") from error
    if not isinstance(payload, dict):
        raise CoderAuthError("encrypted API key is malformed")
    audience = payload.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if API_KEY_AUDIENCE not in audiences or payload.get("iss") != API_KEY_ISSUER:
        raise CoderAuthError("encrypted API key has the wrong audience or issuer")
    moment = time.time() if now is None else now
    if "nbf" not in payload or int(payload["nbf"]) > moment:
        raise CoderAuthError("encrypted API key is not valid yet")
    if int(payload.get("exp", 0)) <= moment:
        raise CoderAuthError("encrypted API key has expired")
    return str(payload.get("api_key", ""))
