"""Verifies a settled webhook, as the README shows.

As a program (the tests run it on a real delivery):
    python3 verify.py SECRET_FILE SIGNATURE_HEADER < body
exits 0 when the signature is valid and fresh.
"""
import hashlib, hmac, sys, time

TOLERANCE = 300  # seconds: each attempt is signed anew, so an old t is a replay

def verify(secret: bytes, signature_header: str, body: bytes, now=None) -> bool:
    """secret: the secret file's content, whitespace trimmed; body: the raw request body."""
    parts = dict(p.split("=", 1) for p in signature_header.split(",") if "=" in p)
    try:
        t, v1 = int(parts["t"]), parts["v1"]
    except (KeyError, ValueError):
        return False
    if abs((now or time.time()) - t) > TOLERANCE:
        return False
    expected = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, v1)

if __name__ == "__main__":
    secret = open(sys.argv[1], "rb").read().strip()
    sys.exit(0 if verify(secret, sys.argv[2], sys.stdin.buffer.read()) else 1)
