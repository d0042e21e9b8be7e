"""One redaction for everything dltool writes (no Spark): names that look secret, URIs, text, the environment."""

from __future__ import annotations

import io

import pytest

from dltool.config.loader import parse_config
from dltool.config.redaction import REDACTED, RedactingWriter, redact, redact_text
from dltool.errors import ConfigError, ErrorRecord


def test_settings_that_look_secret_are_hidden_and_the_rest_kept():
    settings = {
        "spark.hadoop.fs.s3a.secret.key": "s3", "spark.hadoop.fs.s3a.access.key": "ak",
        "fs.azure.account.key.acct.blob.core.windows.net": "az", "fs.azure.sas.box.acct.blob.core.windows.net": "sas",
        "google.cloud.auth.service.account.json.keyfile": "/k.json", "fs.gs.auth.service.account.private.key": "pk",
        "spark.hadoop.fs.s3a.session.token": "tk", "password": "pw",
        "spark.driver.memory": "2g", "key_column": "id", "max_tokens": 5000, "sasl.mechanism": "PLAIN",
    }  # fmt: skip
    shown = redact({"spark": {"conf": settings}})["spark"]["conf"]
    assert {k for k, v in shown.items() if v == REDACTED} == set(list(settings)[:8])
    assert shown["max_tokens"] == 5000 and shown["key_column"] == "id" and shown["sasl.mechanism"] == "PLAIN"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("postgresql://admin:hunter22@db:5432/mlflow", "hunter22"),
        ("s3://AKIAXX:wJalrXUtnFEMI@bucket/data", "wJalrXUtnFEMI"),
        ("https://acct.blob.core.windows.net/c/x?sv=2024&sig=Zm9vYmFyYmF6&se=1", "Zm9vYmFyYmF6"),
        ("cannot start: --conf spark.hadoop.fs.s3a.secret.key=abcd1234 was refused", "abcd1234"),
        ("{'password': 'opensesame'}", "opensesame"),
    ],
)
def test_free_text_loses_credentials(text, secret):
    said = redact_text(text)
    assert secret not in said and REDACTED in said or "***@" in said


def test_the_environment_s_secrets_are_hidden_wherever_they_appear(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_API_TOKEN", "env-secret-0123456789")
    assert redact_text("header Bearer env-secret-0123456789 sent") == f"header Bearer {REDACTED} sent"
    error = ErrorRecord.from_exception(RuntimeError("refused env-secret-0123456789"))
    assert "env-secret" not in error.message
    stream = io.StringIO()
    RedactingWriter(stream).write("token env-secret-0123456789\n")
    assert "env-secret" not in stream.getvalue()


def test_credentials_in_the_tracking_uri_are_refused():
    with pytest.raises(ConfigError, match="tracking_uri must not hold credentials"):
        parse_config("name: x\ndataset: {path: /tmp/d}\ntracking: {mlflow: {tracking_uri: 'postgresql://u:pw@db/ml'}}")


def test_the_manifest_keeps_no_secret_of_the_ingest_section():
    from tests.conftest import make_manifest

    manifest = make_manifest(source="postgresql://etl:hunter22@db/sales",
                             ingest={"reader": "table", "options": {"password": "hunter22", "user": "etl"}})
    written = manifest.to_json()
    assert "hunter22" not in str(written)
    assert written["ingest"]["options"] == {"password": REDACTED, "user": "etl"}
