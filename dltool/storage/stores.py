"""Object-store settings and filesystems: the `storage:` section applied to every S3 location a verb opens.

Settings (endpoint, region, addressing, profile) apply to every location opened inside
`storage_scope`; Spark tasks get them through a job property (`bind_storage`) and TensorFlow
worker processes through their environment (`STORAGE_ENV`). Credentials never travel that
way: each process takes them from its own environment, profile file or instance role, as
the AWS SDK does.
"""

from __future__ import annotations

import configparser
import contextvars
import functools
import json
import os
import sys
from contextlib import contextmanager
from urllib.parse import urlsplit

from dltool.errors import StorageError

STORAGE_PROPERTY = "dltool.storage"  # the Spark local property that carries the settings to tasks
STORAGE_ENV = "DLTOOL_STORAGE"  # the environment variable that carries them to TensorFlow workers
OBJECT_STORES = ("s3", "gcs")  # pyarrow type names of filesystems that cannot rename a folder

_SCOPE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("dltool_storage", default=None)


@contextmanager
def storage_scope(settings: dict | None):
    """Open object stores with these settings (`storage:` as a dict) until the block ends."""
    settings = {k: v for k, v in (settings or {}).items() if v is not None}
    if "webhdfs" not in settings:  # the driver's HADOOP_CONF_DIR, resolved once for every task and worker
        from dltool.storage.hdfs import namenodes

        if known := namenodes():
            settings["webhdfs"] = known
    token = _SCOPE.set(settings)
    try:
        yield
    finally:
        _SCOPE.reset(token)


def with_storage(verb):
    """Run a verb inside its config's storage scope (the config is its first argument; None: the environment's)."""

    @functools.wraps(verb)
    def run(config, *args, **kwargs):
        with storage_scope(config.storage.model_dump() if config is not None else None):
            return verb(config, *args, **kwargs)

    return run


def storage_settings() -> dict:
    """The settings in force: the driver's scope, else the Spark job's property, else the environment's."""
    scoped = _SCOPE.get()
    if scoped is not None:
        return scoped
    if "pyspark" in sys.modules:  # inside a Spark task (never import Spark just to ask)
        from pyspark import TaskContext

        task = TaskContext.get()
        raw = task.getLocalProperty(STORAGE_PROPERTY) if task is not None else None
        if raw:
            return json.loads(raw)
    raw = os.environ.get(STORAGE_ENV)
    return json.loads(raw) if raw else {}


def storage_json() -> str:
    return json.dumps(storage_settings(), sort_keys=True)


def bind_storage(spark) -> None:
    """Send the settings in force to the tasks of the Spark jobs this thread starts."""
    spark.sparkContext.setLocalProperty(STORAGE_PROPERTY, storage_json())


def s3a_conf(settings: dict) -> dict[str, str]:
    """The same settings for Spark's own s3a:// connector (hadoop-aws), where Spark itself reads."""
    conf = {}
    endpoint = settings.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = endpoint
        conf["spark.hadoop.fs.s3a.path.style.access"] = str(settings.get("path_style") is not False).lower()
    region = settings.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        conf["spark.hadoop.fs.s3a.endpoint.region"] = region
    if settings.get("anonymous"):
        conf["spark.hadoop.fs.s3a.aws.credentials.provider"] = "org.apache.hadoop.fs.s3a.AnonymousAWSCredentialsProvider"
    return conf


def _s3_options(settings: dict) -> dict:
    """pyarrow S3FileSystem arguments from the settings and the standard AWS_* variables."""
    env = os.environ
    options: dict = {}
    endpoint = settings.get("endpoint_url") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
        options.update(endpoint_override=parts.netloc + parts.path.rstrip("/"), scheme=parts.scheme)
        if settings.get("path_style") is False:
            options["force_virtual_addressing"] = True  # pyarrow addresses by path when an endpoint is set
    region = settings.get("region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region or endpoint:  # a region avoids pyarrow's lookup of the bucket's region (AWS-only)
        options["region"] = region or "us-east-1"
    if settings.get("anonymous"):
        options["anonymous"] = True
    elif settings.get("profile"):
        options.update(_profile_credentials(settings["profile"], settings.get("credentials_file")))
    return options


def _profile_credentials(profile: str, path: str | None) -> dict:
    """The keys of one profile in the AWS shared credentials file (read here, in each process)."""
    path = os.path.expanduser(path or os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials")
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except (OSError, configparser.Error) as e:
        raise StorageError(f"storage.profile {profile!r}: cannot read the credentials file {path}: {e}") from e
    if not parser.has_section(profile):
        raise StorageError(f"storage.profile {profile!r}: no [{profile}] section in {path}")
    section = parser[profile]
    if "aws_access_key_id" not in section or "aws_secret_access_key" not in section:
        raise StorageError(f"storage.profile {profile!r}: [{profile}] in {path} lacks aws_access_key_id or aws_secret_access_key")
    keys = {"access_key": section["aws_access_key_id"], "secret_key": section["aws_secret_access_key"]}
    if section.get("aws_session_token"):
        keys["session_token"] = section["aws_session_token"]
    return keys


_AWS_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SHARED_CREDENTIALS_FILE")


def s3_filesystem():
    """The S3 filesystem for the settings in force (one per settings, reused)."""
    return _cached_s3(storage_json(), tuple(os.environ.get(k) for k in _AWS_ENV))


@functools.lru_cache(maxsize=8)
def _cached_s3(settings_json: str, env: tuple):  # env: the variables the options read, so a change is seen
    import pyarrow.fs as pafs

    return pafs.S3FileSystem(**_s3_options(json.loads(settings_json)))
