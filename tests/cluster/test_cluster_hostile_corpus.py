"""1,000+ image files, ~10% hostile, some vanishing between listing and reading, ingested on the cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow.dataset as pads
import yaml

from tests.cluster.cli import start
from tests.conftest import png_header_only

CLASSES = ("ant", "bee", "cat")
GOOD_PER_CLASS = 305
BLOCKER = """
import sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.master(sys.argv[1]).appName("blocker").getOrCreate()
sys.stdin.read()  # hold every core of the cluster until the test closes stdin
spark.stop()
"""


def _corpus(root: Path) -> tuple[list[str], dict[str, str], list[str]]:
    """Good keys, bad keys -> the kind of damage, and the good keys that will vanish after listing."""
    rng = np.random.default_rng(5)
    good, bad = [], {}

    def encode(ext: str, image: np.ndarray) -> bytes:
        return cv2.imencode(ext, image)[1].tobytes()

    for c, cls in enumerate(CLASSES):
        (root / cls).mkdir(parents=True)
        for i in range(GOOD_PER_CLASS):
            shape = [(12, 14, 3), (16, 16), (10, 20, 4)][i % 3]  # colour, grey, with alpha
            image = rng.integers(0, 256, shape, dtype=np.uint8)
            ext = [".png", ".jpg", ".bmp", ".webp", ".tiff"][i % 5]
            key = f"{cls}/g{i:04d}{ext}"
            data = encode(ext, image if ext != ".jpg" or len(shape) == 2 else image[..., :3])
            if i % 50 == 7:  # a PNG named .jpg is not damage: it is decoded by its content
                key, data = f"{cls}/png_named_jpg_{i}.jpg", encode(".png", image)
            (root / key).write_bytes(data)
            good.append(key)
        jpeg = encode(".jpg", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        png = encode(".png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        for i in range(5):
            bad[f"{cls}/empty{i}.png"] = ("empty", b"")
            bad[f"{cls}/truncated{i}.jpg"] = ("truncated_jpeg", jpeg[: len(jpeg) // (2 + i)])
            bad[f"{cls}/truncated{i}.png"] = ("truncated_png", png[: len(png) // (2 + i)])
            bad[f"{cls}/text{i}.png"] = ("text", f"not an image, line {i}\n".encode())
            bad[f"{cls}/bomb{i}.png"] = ("bomb", png_header_only(60000 + i, 60000))
            bad[f"{cls}/garbage{i}.webp"] = ("garbage", bytes(rng.integers(0, 256, 300 + i, dtype=np.uint8)))
        bad[f"unlabelled{c}.png"] = ("unlabelled", png)  # outside every class folder: no label
    kinds = {}
    for key, (kind, data) in bad.items():
        (root / key).write_bytes(data)
        kinds[key] = kind
    (root / "README.txt").write_text("not an image: left out by the include patterns\n")
    vanishing = good[5::60]  # listed, then deleted before any executor reads them
    return [k for k in good if k not in vanishing], kinds, vanishing


def _wait(what: str, condition, timeout: float = 180) -> None:
    tick = threading.Event()  # polls the master's status, never a guessed delay
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        tick.wait(0.25)


def test_hostile_corpus_ingests_on_the_cluster_with_every_bad_file_quarantined(
    standalone_cluster, cluster_env, executor_python, tmp_path
):
    root = tmp_path / "corpus"
    good, kinds, vanishing = _corpus(root)
    listed = len(good) + len(kinds) + len(vanishing)
    assert listed >= 1000 and 0.08 <= (len(kinds) + len(vanishing)) / listed <= 0.12
    config = tmp_path / "hostile.yaml"
    config.write_text(yaml.safe_dump({
        "name": "hostile",
        "spark": {"master": standalone_cluster.url, "app_name": "hostile-ingest",
                  "conf": {"spark.executor.memory": "1g"}},
        "dataset": {"path": str(tmp_path / "out"), "max_bad_fraction": 0.2},
        "ingest": {"reader": "image", "input": str(root), "size": [16, 16], "channels": 3, "max_pixels": 10_000_000},
    }))  # fmt: skip

    # Files vanish between listing (driver, before Spark starts) and reading (executors): a second
    # application holds both cores, so the ingest's tasks cannot start until the files are gone.
    blocker = subprocess.Popen([executor_python, "-c", BLOCKER, standalone_cluster.url], stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cluster_env)  # fmt: skip
    ingest = None
    try:
        _wait("the blocker to hold both cores",
              lambda: any(a["name"] == "blocker" and a["cores"] == 2 for a in standalone_cluster.active_apps()))  # fmt: skip
        ingest = start(cluster_env, "ingest", config, "--json")
        _wait("the ingest to register (its files listed)",
              lambda: any(a["name"] == "hostile-ingest" for a in standalone_cluster.active_apps()))  # fmt: skip
        for key in vanishing:
            (root / key).unlink()
    except BaseException:
        if ingest is not None:
            ingest.kill()
            ingest.communicate()
        raise
    finally:
        blocker.communicate(input=b"", timeout=120)  # frees the cores: the ingest's tasks start now
    out, err = ingest.communicate(timeout=600)
    assert ingest.returncode == 0, err[-3000:]
    summary = json.loads(out)

    counts = summary["counts"]
    quarantined = len(kinds) + len(vanishing)
    assert counts["inputs"] == listed and counts["ok"] == len(good) and counts["quarantined"] == quarantined
    assert counts["inputs"] == counts["ok"] + counts["quarantined"] and counts["left_out_by_patterns"] == 1
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert sum(s["rows"] for s in manifest["splits"].values()) == len(good)

    errors = {e["key"]: e for e in pads.dataset(str(tmp_path / "out" / "_errors"), format="parquet").to_table().to_pylist()}
    assert set(errors) == set(kinds) | set(vanishing)
    for key in vanishing:
        assert errors[key]["stage"] == "read" and "disappeared after listing" in errors[key]["message"], errors[key]
    stage = {"empty": "read", "bomb": "header", "truncated_jpeg": "decode", "unlabelled": "label"}
    for key, kind in kinds.items():
        if kind in stage:
            assert errors[key]["stage"] == stage[kind], errors[key]
        assert errors[key]["path"].endswith(key) and errors[key]["error_class"] and errors[key]["message"]
    shards = [str(p) for split in ("train", "val", "test") for p in (tmp_path / "out" / split).glob("part-*.parquet")]
    keys = pads.dataset(shards, format="parquet").to_table(columns=["key"]).column("key").to_pylist()
    assert sorted(keys) == sorted(good)  # every good file exactly once
    print(f"hostile corpus: {listed} files, {quarantined} quarantined, {summary.get('seconds')} s", file=sys.stderr)
