"""Certificate thumbprints, the one place that parses, prints and computes them.

Used by the vSphere session (the pin checked before logging in) and by the HTTP
transports (the pin checked again on every new connection); no pyVmomi here, so the
transports can import it without the SDK.
"""

from __future__ import annotations

import hashlib

from vcbproxy import errors


def normalise_thumbprint(text: str | None) -> str | None:
    """Lowercase hex without colons; SHA-1 (40) or SHA-256 (64) digits, else a usage error."""
    if not text:
        return None
    digits = text.replace(":", "").replace(" ", "").lower()
    if len(digits) not in (40, 64) or any(c not in "0123456789abcdef" for c in digits):
        raise errors.UsageError(
            f"bad thumbprint {text!r}: give the SHA-1 or SHA-256 digest in hex, e.g. AB:CD:..."
        )
    return digits


def pretty_thumbprint(digits: str) -> str:
    """'abcd..' -> 'AB:CD:..', the form vSphere and `openssl x509 -fingerprint` print."""
    digits = digits.upper()
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


def cert_digest(der: bytes, length: int) -> str:
    """The digest of a DER certificate comparable with a pin of ``length`` hex digits
    (40: SHA-1, otherwise SHA-256)."""
    return (hashlib.sha1 if length == 40 else hashlib.sha256)(der).hexdigest()  # noqa: S324 - pin format
