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
