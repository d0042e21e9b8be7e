"""One redaction for everything dltool writes: files, logs, MLflow params and error messages.

What is hidden: the value of any setting whose name looks secret (a key, secret, token,
password, SAS, credential or private key: `spark.hadoop.fs.s3a.secret.key`,
`fs.azure.account.key.ACCOUNT.blob.core.windows.net`, `google.cloud.auth.service.account.json.keyfile`),
the user-info part of every URI (`postgresql://user:pw@db` -> `postgresql://***@db`), secret
query parameters (a SAS token's `sig=`), `name=value` pairs with a secret-looking name in
text, and the value of every environment variable whose name looks secret wherever it appears.
"""

from __future__ import annotations

import os
import re
from typing import Any

__all__ = ["REDACTED", "SECRET_KEY", "RedactingWriter", "looks_secret", "redact", "redact_text", "uri_has_credentials"]

REDACTED = "*********(redacted)"

# Matched against a setting's name. Wider than Spark's own (secret|password|token|access[.]?key):
# Azure account keys, GCS key files, SAS tokens and private keys too; `token` only as a whole last
# word, so `max_tokens` stays readable, and a bare `key` (a record's key, `KEY=VALUE`) is no secret.
SECRET_KEY = re.compile(
    r"(?i)secret|passw(?:or)?d|credential|private|signature"
    r"|(?:access|account|api|session|master|encryption)[._-]?key"
    r"|(?:^|[._-])sas(?:[._-]|$)|(?:^|[._-])(?:keyfile|sig|auth|token)$"
)
_URI_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@\"']+@")
_QUERY_SECRET = re.compile(
    r"(?i)([?&](?:sig|signature|token|access_token|secret|password|key|x-amz-signature|x-amz-credential"
    r"|x-amz-security-token|x-goog-signature|x-goog-credential)=)[^&\s\"']+"
)
_PAIR = re.compile(r"""(?i)\b([\w.-]+)(["']?\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s,;&"'{}\[\]]+)""")
_MIN_SECRET = 10  # environment values shorter than this are not searched for (short words would match everywhere)


def looks_secret(name: str) -> bool:
    return bool(SECRET_KEY.search(name))


def redact(value: Any, name: str = "") -> Any:
    """A copy of a JSON-like value with secrets hidden: values under secret-looking names, and every string
    through `redact_text`."""
    if name and looks_secret(name) and value not in (None, "", [], {}) and not isinstance(value, (bool, dict, list)):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_text(text: str) -> str:
    """Hide credentials in free text: URIs' user info, secret query parameters, `secret=value` pairs, and
    the values of secret-looking environment variables."""
    if not text:
        return text
    for value in _environment_secrets():
        if value in text:
            text = text.replace(value, REDACTED)
    text = _URI_USERINFO.sub(r"\1***@", text)
    text = _QUERY_SECRET.sub(lambda m: m.group(1) + REDACTED, text)
    return _PAIR.sub(_hide_pair, text)


def _hide_pair(match: re.Match) -> str:
    name, between, value = match.groups()
    if not looks_secret(name) or value in _NOT_SECRET:
        return match.group(0)
    return name + between + REDACTED


_NOT_SECRET = {REDACTED, "null", "None", '""', "''"}


def uri_has_credentials(uri: str) -> bool:
    """Whether a URI carries a user name or password (`scheme://user:pw@host`)."""
    return bool(_URI_USERINFO.search(uri))


def _environment_secrets() -> list[str]:
    found = [v for k, v in os.environ.items() if looks_secret(k) and len(v) >= _MIN_SECRET]
    return sorted(set(found), key=len, reverse=True)


class RedactingWriter:
    """A text stream that passes everything written to it through `redact_text` (the CLI's stdout and stderr)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(redact_text(text))
        return len(text)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)
