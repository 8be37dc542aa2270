"""Satellite keys, request signatures and signed app tokens: the shared implementations."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jws
from pydantic import SecretStr

from coder_migrate.errors import CoderAuthError
from coder_migrate.providers.coder import satellite_key
from coder_migrate.providers.coder.app_tokens import (
    AppRequest,
    decrypt_api_key,
    encrypt_api_key,
    sign_app_token,
    verify_app_token,
)
from coder_migrate.providers.coder.models_v2 import CryptoKey


def test_fingerprint_is_sha256_of_the_der_public_key() -> None:
    private = satellite_key.generate_private_key_pem()
    public = satellite_key.public_key_pem(private)
    assert public.startswith("-----BEGIN PUBLIC KEY-----")
    der = serialization.load_pem_public_key(public.encode()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert satellite_key.fingerprint(public) == hashlib.sha256(der).hexdigest()


def test_helm_style_sec1_private_keys_load() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    sec1 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    assert sec1.startswith("-----BEGIN EC PRIVATE KEY-----")
    assert satellite_key.public_key_pem(sec1).startswith("-----BEGIN PUBLIC KEY-----")


@pytest.mark.parametrize(
    "pem",
    [
        "not a key",
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
    ],
)
def test_only_p256_public_keys_are_accepted(pem: str) -> None:
    with pytest.raises(ValueError):
        satellite_key.fingerprint(pem)


def test_request_signatures_verify_and_expire() -> None:
    private = satellite_key.generate_private_key_pem()
    public = satellite_key.public_key_pem(private)
    headers = satellite_key.sign_satellite_request(private, "GET", "/api/x", now=1000)
    assert headers[satellite_key.FINGERPRINT_HEADER] == satellite_key.fingerprint(public)
    assert satellite_key.verify_satellite_request(public, "GET", "/api/x", headers, now=1100)
    assert not satellite_key.verify_satellite_request(public, "POST", "/api/x", headers, now=1100)
    assert not satellite_key.verify_satellite_request(public, "GET", "/api/y", headers, now=1100)
    assert not satellite_key.verify_satellite_request(public, "GET", "/api/x", headers, now=1400)
    other = satellite_key.public_key_pem(satellite_key.generate_private_key_pem())
    assert not satellite_key.verify_satellite_request(other, "GET", "/api/x", headers, now=1100)
    tampered = {**headers, satellite_key.DATE_HEADER: "1001"}
    assert not satellite_key.verify_satellite_request(public, "GET", "/api/x", tampered, now=1100)


def key(sequence: int = 1, secret: str = "ab" * 64) -> CryptoKey:
    return CryptoKey(
        feature="workspace_apps_token",
        secret=SecretStr(secret),
        sequence=sequence,
        starts_at="2026-01-01T00:00:00Z",  # type: ignore[arg-type]
    )


REQUEST = AppRequest(
    access_method="subdomain",
    username_or_id="u",
    workspace_name_or_id="w",
    agent_name_or_id="main",
    app_slug_or_port="code-server",
)


def test_app_tokens_round_trip_with_kid_and_hs512() -> None:
    token = sign_app_token(
        key=key(7),
        request=REQUEST,
        user_id="uid",
        username="u",
        workspace_id="wid",
        agent_id="aid",
        app_url="http://127.0.0.1:1",
        now=1000,
    )
    header = jws.extract_compact(token.encode()).headers()
    assert (header["alg"], header["kid"]) == ("HS512", "7")
    claims = verify_app_token(token, [key(1, "cd" * 64), key(7)], now=1030)
    assert (claims.agent_id, claims.request, claims.exp) == ("aid", REQUEST, 1060)


def test_app_tokens_are_refused_when_expired_forged_or_unknown() -> None:
    token = sign_app_token(key=key(), request=REQUEST, agent_id="a", now=1000)
    with pytest.raises(CoderAuthError, match="expired"):
        verify_app_token(token, [key()], now=1061)
    with pytest.raises(CoderAuthError, match="signature"):
        verify_app_token(token, [key(1, "ef" * 64)], now=1001)
    with pytest.raises(CoderAuthError, match="unknown key"):
        verify_app_token(token, [key(2)], now=1001)
    with pytest.raises(CoderAuthError, match="malformed"):
        verify_app_token("not.a.token", [key()], now=1001)


def api_key(sequence: int = 1, secret: str = "12" * 32) -> CryptoKey:
    return key(sequence, secret).model_copy(update={"feature": "workspace_apps_api_key"})


def test_encrypted_api_keys_round_trip() -> None:
    value = encrypt_api_key("abcdef0123-sessionsessionsession", key=api_key(3), now=1000)
    assert value.count(".") == 4  # compact JWE
    header = value.split(".")[0]
    assert "sessionsession" not in value
    assert header
    assert decrypt_api_key(value, [api_key(1, "34" * 32), api_key(3)], now=1030) == (
        "abcdef0123-sessionsessionsession"
    )


def test_encrypted_api_keys_are_refused_when_expired_or_wrong_key() -> None:
    value = encrypt_api_key("t", key=api_key(), now=1000)
    with pytest.raises(CoderAuthError, match="expired"):
        decrypt_api_key(value, [api_key()], now=1061)
    with pytest.raises(CoderAuthError, match="cannot be decrypted"):
        decrypt_api_key(value, [api_key(1, "56" * 32)], now=1001)
    with pytest.raises(CoderAuthError, match="unknown key"):
        decrypt_api_key(value, [api_key(2)], now=1001)
    with pytest.raises(CoderAuthError, match="malformed"):
        decrypt_api_key("%%%", [api_key()], now=1001)
