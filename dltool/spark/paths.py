"""Spark's side of a location: the Hadoop URI Spark reads a file or folder by, and the s3a connector check."""

from __future__ import annotations

from dltool.errors import ConfigError


def hadoop_uri(location) -> str:
    """The URI Spark's Hadoop filesystems want for a Location (a plain local path becomes file://)."""
    return spark_path(location.uri, location.path)


def spark_path(source_uri: str, path: str) -> str:
    """The Hadoop URI of a file that pyarrow listed under source_uri (pyarrow drops scheme and host)."""
    from urllib.parse import urlsplit

    if "://" not in source_uri:
        return "file://" + path
    parts = urlsplit(source_uri)
    scheme = {"s3": "s3a"}.get(parts.scheme, parts.scheme)
    if scheme in ("s3a", "gs", "gcs"):
        return f"{scheme}://{path}"  # pyarrow paths there are bucket/key
    return f"{scheme}://{parts.netloc}{path}"


def require_s3a(spark, *locations) -> None:
    """Stop before any job when Spark itself must read an s3:// location and lacks its s3a connector."""
    on_s3 = [loc.uri for loc in locations if loc.fs.type_name == "s3"]
    if not on_s3:
        return
    jvm = spark.sparkContext._jvm
    try:
        jvm.java.lang.Class.forName("org.apache.hadoop.fs.s3a.S3AFileSystem", False,
                                    jvm.java.lang.Thread.currentThread().getContextClassLoader())  # fmt: skip
        return
    except Exception:  # noqa: BLE001 - py4j's Py4JJavaError wraps the ClassNotFoundException
        version = jvm.org.apache.hadoop.util.VersionInfo.getVersion()
    raise ConfigError(
        f"{on_s3[0]}: table readers read and stage through Spark, and this Spark has no s3a connector: add "
        f"--conf spark.jars.packages=org.apache.hadoop:hadoop-aws:{version} (its Hadoop version), or copy the table "
        "to a local or HDFS path first (image, audio and text-file readers need no connector)"
    )
