"""Satellite key pair, fingerprint and request signing: the one implementation.

ASSUMED (docs/coder-emulator.md): Coder v1 does not document the key encoding, the
fingerprint or how the primary trusts a satellite. The project uses a PEM ECDSA P-256 public
key, the lowercase hex sha256 of its DER SubjectPublicKeyInfo, and signed request headers.
The emulator and the bundled proxy both import this module so they always agree.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "DATE_HEADER",
    "FINGERPRINT_HEADER",
    "MAX_CLOCK_SKEW_SECONDS",
    "SIGNATURE_HEADER",
    "fingerprint",
    "generate_private_key_pem",
    "load_public_key",
    "public_key_pem",
    "sign_satellite_request",
    "signed_message",
    "verify_satellite_request",
]

FINGERPRINT_HEADER = "Coder-Satellite-Fingerprint"
DATE_HEADER = "Coder-Satellite-Date"
SIGNATURE_HEADER = "Coder-Satellite-Signature"
MAX_CLOCK_SKEW_SECONDS = 300


def generate_private_key_pem() -> str:
    """A new ECDSA P-256 private key, PEM PKCS#8."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _load_private_key(private_pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("satellite private key must be an ECDSA P-256 key")
    return key


def load_public_key(public_pem: str) -> ec.EllipticCurvePublicKey:
    """Parse a PEM public key; ``ValueError`` unless it is ECDSA P-256."""
    try:
        key = serialization.load_pem_public_key(public_pem.encode())
    except (ValueError, TypeError) as error:
        raise ValueError("satellite public key is not a PEM public key") from error
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("satellite public key must be an ECDSA P-256 key")
    return key


def public_key_pem(private_pem: str) -> str:
    """The PEM SubjectPublicKeyInfo of a private key."""
    return (
        _load_private_key(private_pem)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def fingerprint(public_pem: str) -> str:
    """Lowercase hex sha256 of the DER SubjectPublicKeyInfo."""
    der = load_public_key(public_pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def signed_message(method: str, path: str, date: str) -> bytes:
    """What a satellite signs: method, path (no query string) and date, one per line."""
    return f"{method.upper()}\n{path}\n{date}".encode()


def sign_satellite_request(
    private_pem: str, method: str, path: str, now: float | None = None
) -> dict[str, str]:
    """Headers that authenticate a satellite request to the primary."""
    key = _load_private_key(private_pem)
    date = str(int(time.time() if now is None else now))
    signature = key.sign(signed_message(method, path, date), ec.ECDSA(hashes.SHA256()))
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        FINGERPRINT_HEADER: fingerprint(public_pem.decode()),
        DATE_HEADER: date,
        SIGNATURE_HEADER: base64.urlsafe_b64encode(signature).rstrip(b"=").decode(),
    }


def verify_satellite_request(
    public_pem: str,
    method: str,
    path: str,
    headers: Mapping[str, str],
    now: float | None = None,
) -> bool:
    """True when the headers carry a fresh, valid signature by this public key."""
    date = headers.get(DATE_HEADER, "")
    signature_text = headers.get(SIGNATURE_HEADER, "")
    if not date.isdigit() or not signature_text:
        return False
    current = time.time() if now is None else now
    if abs(current - int(date)) > MAX_CLOCK_SKEW_SECONDS:
        return False
    try:
        signature = base64.urlsafe_b64decode(signature_text + "=" * (-len(signature_text) % 4))
        load_public_key(public_pem).verify(
            signature, signed_message(method, path, date), ec.ECDSA(hashes.SHA256())
        )
    except (InvalidSignature, ValueError):
        return False
    return True
