"""hdfs:// for dltool's Python side, through WebHDFS: the NameNode's REST API (see docs/storage.md).

Spark's JVM reads and writes hdfs:// with its own Hadoop client. dltool's Python code (listing inputs,
decoding files in tasks, writing shards, manifests, checkpoints, predictions) talks WebHDFS with
fsspec's client, wrapped as a pyarrow filesystem, so nothing needs `libhdfs.so`, a Hadoop install or a
JVM in Python: on YARN containers and on a laptop alike, `pip install dltool` is enough.

Which NameNode answers `hdfs://HOST:PORT`: the `dfs.namenode.http-address` of HADOOP_CONF_DIR's
hdfs-site.xml (the one a Spark-on-YARN driver already has), else HOST on Hadoop 3's default port 9870.
`hdfs:///path` uses core-site.xml's `fs.defaultFS`. The driver resolves it once and sends it to Spark
tasks and TensorFlow workers with the storage settings (key `webhdfs`), so containers need no conf.
The user is HADOOP_USER_NAME, else the login name, as Hadoop's own client does with simple auth.
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

from dltool.errors import ConfigError, StorageError

DEFAULT_HTTP_PORT = 9870  # Hadoop 3's dfs.namenode.http-address port
TIMEOUT_S = (10, 120)  # connect, read: an unreachable or stuck NameNode or DataNode fails, never hangs


def hadoop_conf_dir() -> Path | None:
    for folder in (os.environ.get("HADOOP_CONF_DIR"), os.environ.get("HADOOP_HOME") and
                   os.path.join(os.environ["HADOOP_HOME"], "etc", "hadoop")):  # fmt: skip
        if folder and Path(folder).is_dir():
            return Path(folder)
    return None


def _site(name: str) -> dict[str, str]:
    folder = hadoop_conf_dir()
    if folder is None or not (folder / name).is_file():
        return {}
    try:
        root = ET.parse(folder / name).getroot()
    except (OSError, ET.ParseError) as e:
        raise StorageError(f"{folder / name}: cannot read the Hadoop configuration: {e}") from e
    found = {}
    for prop in root.iter("property"):
        key, value = prop.findtext("name"), prop.findtext("value")
        if key and value is not None:
            found[key.strip()] = value.strip()
    return found


def default_fs() -> str | None:
    """fs.defaultFS of HADOOP_CONF_DIR, when it names HDFS."""
    value = _site("core-site.xml").get("fs.defaultFS", "")
    return value if value.startswith("hdfs://") else None


def namenodes() -> dict[str, str]:
    """{"HOST:PORT" of hdfs:// URIs: "http://HOST:HTTP_PORT"} from HADOOP_CONF_DIR ("" is fs.defaultFS's)."""
    fs = default_fs()
    if fs is None:
        return {}
    netloc = urlsplit(fs).netloc
    http = _site("hdfs-site.xml").get("dfs.namenode.http-address")
    host = netloc.rsplit(":", 1)[0]
    if http:
        http_host, _, port = http.rpartition(":")
        url = f"http://{host if http_host in ('', '0.0.0.0') else http_host}:{port}"
    else:
        url = f"http://{host}:{DEFAULT_HTTP_PORT}"
    return {netloc: url, "": url}


def webhdfs_url(netloc: str, settings: dict) -> str:
    """The NameNode's WebHDFS address for an hdfs:// authority ("" for hdfs:///path)."""
    known = settings.get("webhdfs") or namenodes()
    if netloc in known:
        return known[netloc]
    if not netloc:
        raise ConfigError("hdfs:///PATH needs fs.defaultFS: set HADOOP_CONF_DIR to the cluster's client configuration, "
                          "or write hdfs://NAMENODE:PORT/PATH")  # fmt: skip
    return f"http://{netloc.rsplit(':', 1)[0]}:{DEFAULT_HTTP_PORT}"


def hdfs_filesystem(netloc: str, settings: dict):
    """A pyarrow filesystem for one NameNode (one per address and user, reused)."""
    user = os.environ.get("HADOOP_USER_NAME") or getpass.getuser()
    return _cached(webhdfs_url(netloc, settings), user)


@functools.lru_cache(maxsize=8)
def _cached(url: str, user: str):
    import pyarrow.fs as pafs

    try:
        from fsspec.implementations.webhdfs import WebHDFile, WebHDFS
    except ImportError as e:
        raise StorageError(f"hdfs:// needs fsspec and requests: pip install fsspec requests ({e})") from e
    parts = urlsplit(url)

    class _WebHDFS(WebHDFS):
        """fsspec's WebHDFS with bounded requests, checked renames and HDFS errors as OSError."""

        def _connect(self):
            super()._connect()
            request = self.session.request

            def bounded(method, url, **kwargs):
                kwargs.setdefault("timeout", TIMEOUT_S)
                return request(method, url, **kwargs)

            self.session.request = bounded
            for verb in ("get", "put", "post", "delete"):
                setattr(self.session, verb, functools.partial(bounded, verb.upper()))

        def _call(self, op, method="get", path=None, data=None, redirect=True, **kwargs):
            import requests

            try:
                return super()._call(op, method, path, data, redirect, **kwargs)
            except RuntimeError as e:  # a RemoteException fsspec does not map (exists, not empty, safe mode...)
                raise OSError(f"HDFS {op} {path}: {e}") from e
            except requests.RequestException as e:  # refused, timed out, reset: the cluster, not the record
                reason = type(e).__name__ if isinstance(e, requests.ConnectionError) else str(e)
                raise OSError(f"no answer from the NameNode's WebHDFS at {url} ({reason}; "
                              "its address comes from HADOOP_CONF_DIR's dfs.namenode.http-address)") from e

        def _process_info(self, info):  # noqa: D401 - fsspec's hook
            import datetime

            info = WebHDFS._process_info(info)
            info["mtime"] = datetime.datetime.fromtimestamp(info["modificationTime"] / 1000, datetime.timezone.utc)
            return info

        def via_datanode(self, op, method, path, send, **kwargs):
            """Ask the NameNode which DataNode serves `op`, then `send(location)` there. A DataNode that
            refuses the connection (dead, but not yet known dead) is excluded and the NameNode asked again,
            as Hadoop's own WebHDFS client does; it is named by its transfer address, from the NameNode's JMX."""
            import requests

            excluded: list[str] = []
            while True:
                params = {**kwargs, **({"excludedatanodes": ",".join(excluded)} if excluded else {})}
                out = self._call(op, method, path, redirect=False, **params)
                if "Location" not in out.headers:
                    return out.content
                location = self._apply_proxy(out.headers["Location"])
                try:
                    return send(location)
                except requests.ConnectionError as e:
                    node = self._transfer_address(urlsplit(location).netloc) if _refused(e) else None
                    if node is None or node in excluded or len(excluded) >= 3:
                        raise OSError(f"HDFS {op} {path}: DataNode {urlsplit(location).netloc} does not answer "
                                      f"({type(e).__name__})") from e  # fmt: skip
                    excluded.append(node)

        def _transfer_address(self, http_address: str) -> str | None:
            try:
                beans = self.session.get(f"{url}/jmx", params={"qry": "Hadoop:service=NameNode,name=NameNodeInfo"}).json()
                live = json.loads(beans["beans"][0]["LiveNodes"])
            except (OSError, ValueError, KeyError, IndexError):
                return None
            return next((node["xferaddr"] for node in live.values() if node.get("infoAddr") == http_address), None)

        def _open(self, path, mode="rb", block_size=None, autocommit=True, **kwargs):
            return _File(self, path, mode=mode, block_size=block_size or self.blocksize, tempdir=self.tempdir,
                         autocommit=autocommit)  # fmt: skip

        def mv(self, path1, path2, **kwargs):
            """HDFS's atomic rename; an existing file at path2 is replaced (pyarrow's `move`)."""
            out = self._call("RENAME", method="put", path=path1, destination=self._strip_protocol(path2),
                             renameoptions="OVERWRITE")  # fmt: skip
            if out.content and out.headers.get("content-type", "").startswith("application/json"):
                if json.loads(out.content).get("boolean") is False:
                    raise OSError(f"HDFS cannot rename {path1} to {path2}")

    class _File(WebHDFile):
        """fsspec's WebHDFS file, reading and writing around a DataNode that does not answer."""

        def _fetch_range(self, start, end):
            start, end = max(start, 0), min(self.size, end)
            if start >= end:
                return b""

            def get(location):
                got = self.fs.session.get(location)
                got.raise_for_status()
                return got.content

            return self.fs.via_datanode("OPEN", "get", self.path, get, offset=start, length=end - start)

        def _initiate_upload(self):
            def create(location):
                self.fs.session.put(location, headers=OCTETS).raise_for_status()

            self.fs.via_datanode("CREATE", "put", self.path, create, overwrite="true")

        def _upload_chunk(self, final=False):
            data = self.buffer.getvalue()

            def append(location):
                self.fs.session.post(location, data=data, headers=OCTETS).raise_for_status()

            self.fs.via_datanode("APPEND", "post", self.path, append)  # asked per chunk: a DataNode may have died
            return True

    fs = _WebHDFS(parts.hostname, port=parts.port or DEFAULT_HTTP_PORT, user=user,
                  use_https=parts.scheme == "https")  # fmt: skip
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


OCTETS = {"content-type": "application/octet-stream"}


def _refused(error) -> bool:
    """A connection that never opened: nothing reached the DataNode, so asking another one is safe."""
    return "NewConnectionError" in repr(error) or "Connection refused" in str(error)

