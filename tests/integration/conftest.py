"""One local[2] SparkSession for all integration tests, built the way dltool builds it."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def spark():
    from dltool.config.models import SparkSettings
    from dltool.spark.session import spark_session

    session = spark_session(SparkSettings(master="local[2]", conf={"spark.ui.enabled": False}))
    yield session
    session.stop()


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.spark)


def _ingest_once(tmp_path_factory, config: str, name: str):
    from tests.conftest import ROOT, run_ingest_cli

    out = tmp_path_factory.mktemp("datasets") / name
    result, _ = run_ingest_cli(ROOT / "configs" / config, "--output", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def digits_dataset(spark, tmp_path_factory):
    """The sample images ingested once per test session (read-only for tests)."""
    return _ingest_once(tmp_path_factory, "images.yaml", "digits")


@pytest.fixture(scope="session")
def churn_dataset(spark, tmp_path_factory):
    """The sample CSV ingested once per test session (read-only for tests)."""
    return _ingest_once(tmp_path_factory, "csv.yaml", "churn")
