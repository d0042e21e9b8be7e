"""Which NameNode answers an hdfs:// URI (storage/hdfs.py): read from HADOOP_CONF_DIR, sent to tasks."""

from __future__ import annotations

import pytest

from dltool.errors import ConfigError
from dltool.storage.hdfs import namenodes, webhdfs_url


def _site(folder, name, **props):
    body = "".join(f"<property><name>{k}</name><value>{v}</value></property>" for k, v in props.items())
    (folder / name).write_text(f"<?xml version='1.0'?><configuration>{body}</configuration>")


def test_namenode_http_address_comes_from_hdfs_site(tmp_path, monkeypatch):
    _site(tmp_path, "core-site.xml", **{"fs.defaultFS": "hdfs://nn.example:8020"})
    _site(tmp_path, "hdfs-site.xml", **{"dfs.namenode.http-address": "0.0.0.0:50070"})
    monkeypatch.setenv("HADOOP_CONF_DIR", str(tmp_path))
    assert namenodes() == {"nn.example:8020": "http://nn.example:50070", "": "http://nn.example:50070"}
    assert webhdfs_url("", {}) == "http://nn.example:50070"  # hdfs:///path: fs.defaultFS's NameNode
    assert webhdfs_url("other:9000", {}) == "http://other:9870"  # another cluster: Hadoop 3's default port


def test_tasks_use_the_address_the_driver_resolved(monkeypatch):
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    monkeypatch.delenv("HADOOP_HOME", raising=False)
    sent = {"webhdfs": {"127.0.0.1:41000": "http://127.0.0.1:41001", "": "http://127.0.0.1:41001"}}
    assert webhdfs_url("127.0.0.1:41000", sent) == "http://127.0.0.1:41001"
    assert webhdfs_url("", sent) == "http://127.0.0.1:41001"


def test_hdfs_without_a_namenode_or_configuration_says_what_to_set(monkeypatch):
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    monkeypatch.delenv("HADOOP_HOME", raising=False)
    with pytest.raises(ConfigError, match="HADOOP_CONF_DIR"):
        webhdfs_url("", {})
