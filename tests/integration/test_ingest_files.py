"""Image and audio ingest on local[2], in forked processes (Spark tasks compared): shards, quarantine, reruns."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from dltool.shards.codec import TensorSpec, decode_tensors
from tests.conftest import ROOT, png_header_only, read_split
from tests.conftest import run_ingest_cli as ingest


def test_images_config_ingests_and_reads_back_without_dltool(spark, tmp_path):
    out = tmp_path / "digits"
    result, summary = ingest(ROOT / "configs" / "images.yaml", "--output", out)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "_manifest.json").read_text())
    assert (out / "_SUCCESS").exists()
    counts = manifest["counts"]
    assert counts["inputs"] == 600 and counts["ok"] == 600 and counts["quarantined"] == 0
    assert manifest["label"]["vocabulary"] == [str(d) for d in range(10)]
    assert manifest["features"]["shape"] == [32, 32, 3] and manifest["features"]["dtype"] == "uint8"
    spec = TensorSpec.from_json(manifest["features"])
    total = 0
    for split in ("train", "val", "test"):
        table = read_split(out, split)
        assert table.num_rows == manifest["splits"][split]["rows"]
        images = decode_tensors(table.column("features"), spec)
        assert images.shape == (table.num_rows, 32, 32, 3) and images.dtype == np.uint8
        assert set(table.column("label").to_pylist()) <= set(range(10))
        total += table.num_rows
    train_keys = read_split(out, "train").column("key").to_pylist()
    # One augmented copy per train image, none for val/test.
    assert sum(k.endswith("#aug1") for k in train_keys) == counts["augmented"] == len(train_keys) // 2
    assert not any("#aug" in k for k in read_split(out, "val").column("key").to_pylist())
    assert total == counts["rows"]
    # The key names the source file; the label is its class folder.
    table = read_split(out, "test")
    vocab = manifest["label"]["vocabulary"]
    for key, label in zip(table.column("key").to_pylist(), table.column("label").to_pylist()):
        assert key.split("/")[0] == vocab[label]
    # A decoded PNG matches OpenCV's own decode+resize of the source (pad mode, 32x32 already fits).
    row = next(i for i, k in enumerate(table.column("key").to_pylist()) if k.endswith(".png") and "#" not in k)
    source = cv2.cvtColor(cv2.imread(str(ROOT / "sample_data" / "images" / table.column("key")[row].as_py())), cv2.COLOR_BGR2RGB)
    if source.shape[:2] == (32, 32):
        np.testing.assert_array_equal(decode_tensors(table.column("features"), spec)[row], source)
    # Spark and pandas read the shards with no dltool code.
    assert spark.read.parquet(str(out / "train")).count() == manifest["splits"]["train"]["rows"]
    frame = pd.read_parquet(out / "val")
    assert len(np.frombuffer(frame["features"].iloc[0], np.uint8)) == 32 * 32 * 3
    # Channel statistics from the train split are in the manifest.
    assert len(manifest["stats"]["mean"]) == 3 and all(0 < s < 128 for s in manifest["stats"]["std"])
    meta = json.loads(pq.ParquetFile(out / manifest["splits"]["train"]["files"][0]).schema_arrow.metadata[b"dltool.tensors"])
    assert meta["features"]["shape"] == [32, 32, 3]

    # Rerun: nothing to do, exit 0; --overwrite rebuilds with identical split assignment.
    again, summary = ingest(ROOT / "configs" / "images.yaml", "--output", out)
    assert again.exit_code == 0 and summary["status"] == "up_to_date"
    keys_before = {s: sorted(read_split(out, s).column("key").to_pylist()) for s in ("train", "val", "test")}
    rebuilt, summary = ingest(ROOT / "configs" / "images.yaml", "--output", out, "--overwrite")
    assert rebuilt.exit_code == 0 and summary["status"] == "written" and summary["replaced"] == "dataset"
    assert keys_before == {s: sorted(read_split(out, s).column("key").to_pylist()) for s in ("train", "val", "test")}
    assert not list(tmp_path.glob("digits.staging-*")) and not list(tmp_path.glob("digits.old-*"))


def test_audio_config_ingests_spectrograms(spark, tmp_path):
    out = tmp_path / "sounds"
    result, summary = ingest(ROOT / "configs" / "audio.yaml", "--output", out)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["counts"]["ok"] == 150 and manifest["label"]["vocabulary"] == ["chirp", "noise", "tone"]
    spec = TensorSpec.from_json(manifest["features"])
    assert spec.shape == (61, 32, 1) and spec.dtype == "float32"  # 1 s at 8 kHz, n_fft 256, hop 128
    features = decode_tensors(read_split(out, "train").column("features"), spec)
    assert np.isfinite(features).all()
    # Statistics are per mel bin (axis 1) and match the train shards.
    assert manifest["stats"]["axis"] == 1 and len(manifest["stats"]["mean"]) == 32
    np.testing.assert_allclose(manifest["stats"]["mean"], features.mean(axis=(0, 1, 3)), rtol=1e-4, atol=1e-4)
    # Spark sees the tensor column as array<float>.
    assert dict(spark.read.parquet(str(out / "val")).dtypes)["features"] == "array<float>"


@pytest.fixture
def hostile_images(tmp_path):
    """20 good images in two classes plus one file of every bad kind."""
    root = tmp_path / "hostile"
    rng = np.random.default_rng(1)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            image = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            cv2.imwrite(str(root / cls / f"{i}.png"), image)
    good_jpeg = cv2.imencode(".jpg", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))[1].tobytes()
    (root / "cat" / "wrong_extension.jpg").write_bytes(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    bad = {
        "cat/empty.png": b"",
        "cat/truncated.jpg": good_jpeg[: len(good_jpeg) // 2],
        "dog/text.png": b"this is a text file, not a PNG\n",
        "dog/bomb.png": png_header_only(60000, 60000),
        "dog/garbage.webp": bytes(rng.integers(0, 256, 500, dtype=np.uint8)),
        "no_class_folder.png": cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes(),
    }
    for name, data in bad.items():
        (root / name).write_bytes(data)
    (root / "dog" / "notes.txt").write_text("not an image and not included")
    return root, bad


def test_hostile_images_are_quarantined_and_counted(spark, tmp_path, write_config, hostile_images):
    root, bad = hostile_images
    config = {
        "name": "hostile",
        "dataset": {"path": str(tmp_path / "out"), "max_bad_fraction": 0.5, "split": {"train": 0.5, "val": 0.25, "test": 0.25}},
        "ingest": {"reader": "image", "input": str(root), "size": [16, 16], "channels": 1, "max_pixels": 1_000_000},
    }
    result, summary = ingest(write_config(config))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    counts = manifest["counts"]
    assert counts == {**counts, "inputs": 27, "ok": 21, "quarantined": 6, "left_out_by_patterns": 1}
    errors = pads.dataset(str(tmp_path / "out" / "_errors"), format="parquet").to_table().to_pylist()
    by_key = {e["key"]: e for e in errors}
    assert set(by_key) == set(bad)
    assert by_key["cat/empty.png"]["stage"] == "read"
    assert by_key["dog/bomb.png"]["stage"] == "header" and "max_pixels" in by_key["dog/bomb.png"]["message"]
    assert by_key["cat/truncated.jpg"]["stage"] == "decode" and "truncated" in by_key["cat/truncated.jpg"]["message"]
    assert by_key["no_class_folder.png"]["stage"] == "label"
    assert all(e["path"].endswith(e["key"]) and e["reader"] == "image" and e["error_class"] for e in errors)
    keys = [k for s in ("train", "val", "test") for k in read_split(tmp_path / "out", s).column("key").to_pylist()]
    assert len(keys) == 21 and "cat/wrong_extension.jpg" in keys  # decoded by content, not by name


def test_spark_tasks_and_forked_processes_write_the_same_shards(spark, tmp_path, hostile_images):
    """A file reader on a local master with local folders runs its tasks in forked processes, with no session; on
    a cluster, in Spark tasks. Either way: the same shards, quarantined records, statistics and counts."""
    from dataclasses import asdict

    from dltool.config.models import ExperimentConfig
    from dltool.ingest.files import ingest_files
    from dltool.ingest.run import local_file_tasks
    from dltool.readers.base import reader_for
    from dltool.storage.fs import open_location

    root, bad = hostile_images
    config = ExperimentConfig.model_validate({
        "name": "both", "spark": {"master": "local[2]"},
        "dataset": {"path": str(tmp_path / "unused"), "max_bad_fraction": 0.5,
                    "split": {"train": 0.5, "val": 0.25, "test": 0.25}},
        "ingest": {"reader": "image", "input": str(root), "size": [16, 16], "channels": 1, "max_pixels": 1_000_000},
    })  # fmt: skip
    reader, source = reader_for(config.ingest), open_location(str(root))
    files, _ = reader.inputs()
    assert local_file_tasks(config, source, open_location(str(tmp_path))) == 2  # what `dltool ingest` takes here
    written = {}
    for name, session in (("spark", spark), ("forked", None)):
        target = open_location(str(tmp_path / name))
        target.fs.create_dir(target.path)
        written[name] = asdict(ingest_files(session, config, reader, source, files, target, 2, progress=False))
    assert written["forked"] == written["spark"] and written["spark"]["quarantined"] == len(bad)
    for folder in ("train", "val", "test", "_errors"):
        tables = [pads.dataset(str(tmp_path / name / folder), format="parquet").to_table().sort_by("key")
                  for name in ("spark", "forked")]  # fmt: skip
        assert tables[0].num_rows > 0 and tables[0].equals(tables[1]), folder


def test_linked_folders_and_files_are_read_once_and_broken_links_quarantined(spark, tmp_path, write_config,
                                                                           hostile_images):  # fmt: skip
    import os

    root, bad = hostile_images
    os.symlink(".", root / "cat" / "loop")  # cat/loop/loop/... would repeat every cat, under a class "loop"
    os.symlink("0.png", root / "dog" / "zero_again.png")
    os.symlink("nowhere.png", root / "dog" / "gone.png")
    config = {
        "name": "links",
        "dataset": {"path": str(tmp_path / "out"), "max_bad_fraction": 0.5},
        "ingest": {"reader": "image", "input": str(root), "size": [16, 16], "channels": 1, "max_pixels": 1_000_000},
    }
    result, _ = ingest(write_config(config))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["counts"]["inputs"] == 28 and manifest["counts"]["ok"] == 21  # the 27 files and the broken link
    assert manifest["label"]["vocabulary"] == ["cat", "dog"]
    errors = {e["key"]: e for e in pads.dataset(str(tmp_path / "out" / "_errors"), format="parquet").to_table().to_pylist()}
    assert set(errors) == set(bad) | {"dog/gone.png"}
    assert errors["dog/gone.png"]["stage"] == "read"
    assert errors["dog/gone.png"]["message"] == "dangling symbolic link to 'nowhere.png'"


def test_quality_threshold_exits_3_and_leaves_no_complete_dataset(spark, tmp_path, write_config, hostile_images):
    root, _ = hostile_images
    out = tmp_path / "out"
    config = {
        "name": "hostile",
        "dataset": {"path": str(out), "max_bad_fraction": 0.05},
        "ingest": {"reader": "image", "input": str(root), "size": [16, 16]},
    }
    path = write_config(config)
    result, summary = ingest(path)
    assert result.exit_code == 3
    assert summary["status"] == "failed_quality" and summary["summary"]["counts"]["quarantined"] == 6
    assert "6 of 27 inputs quarantined" in result.stderr and "dataset.max_bad_fraction 0.05" in result.stderr
    assert "0.23 goes on without them" in result.stderr  # 6 of 27 is 0.222: the least that lets it pass
    assert not (out / "_SUCCESS").exists() and (out / "_errors").is_dir()
    # `train` and `inspect` see an incomplete dataset; a rerun with a looser gate replaces it.
    from dltool.errors import InputNotFoundError
    from dltool.storage import Manifest, open_location

    with pytest.raises(InputNotFoundError, match="incomplete"):
        Manifest.read(open_location(str(out)))
    config["dataset"]["max_bad_fraction"] = 0.3
    result, summary = ingest(write_config(config))
    assert result.exit_code == 0 and summary["replaced"] == "incomplete"
    assert (out / "_SUCCESS").exists()
    # A rebuild that fails its gate never displaces the complete dataset: it lands beside it.
    before = (out / "_manifest.json").read_text()
    config["dataset"]["max_bad_fraction"] = 0.01
    result, summary = ingest(write_config(config), "--overwrite")
    assert result.exit_code == 3 and "previous complete dataset is kept" in result.stderr
    assert (out / "_SUCCESS").exists() and (out / "_manifest.json").read_text() == before
    assert (tmp_path / "out.failed" / "_errors").is_dir()


def test_refuses_foreign_output_and_changed_config(spark, tmp_path, write_config, hostile_images):
    root, _ = hostile_images
    out = tmp_path / "taken"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    config = {"name": "x", "dataset": {"path": str(out), "max_bad_fraction": 0.5},
              "ingest": {"reader": "image", "input": str(root), "size": [8, 8]}}  # fmt: skip
    for flags in ((), ("--overwrite",)):  # a folder dltool did not write is never replaced, --overwrite or not
        result, _ = ingest(write_config(config), *flags)
        assert result.exit_code == 2 and "dltool did not write this folder" in result.stderr
        assert "precious.txt" in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert (out / "precious.txt").read_text() == "keep me"
    backup = tmp_path / "taken.old-2023"  # the user's own folder, named like dltool's leftovers
    backup.mkdir()
    (backup / "notes.txt").write_text("mine")
    shutil.rmtree(out)
    assert ingest(write_config(config))[0].exit_code == 0
    assert (backup / "notes.txt").read_text() == "mine"
    config["ingest"]["size"] = [12, 12]
    result, _ = ingest(write_config(config))
    assert result.exit_code == 2 and "--overwrite" in result.stderr
    # The folder that holds the input is never an output, even an empty-looking path into it.
    result, _ = ingest(write_config({**config, "dataset": {"path": str(root.parent)}}), "--overwrite")
    assert result.exit_code == 2 and "this command's input or config" in result.stderr
    assert (root / "cat" / "0.png").exists()


def test_missing_input_is_a_clear_config_error(spark, tmp_path, write_config):
    config = {"name": "x", "dataset": {"path": str(tmp_path / "o")},
              "ingest": {"reader": "image", "input": str(tmp_path / "nowhere"), "size": [8, 8]}}  # fmt: skip
    result, summary = ingest(write_config(config))
    assert result.exit_code == 2
    assert summary["message"] == f"{tmp_path / 'nowhere'}: input not found"


def test_a_decoder_library_that_fails_to_import_fails_the_run_instead_of_every_record(tmp_path):
    """A broken environment is exit 1 with its cause, not 150 of 150 inputs quarantined (exit 3)."""
    import os
    import subprocess
    import sys

    broken = tmp_path / "site"
    broken.mkdir()
    (broken / "soundfile.py").write_text('raise ImportError("libsndfile could not be loaded (broken install)")\n')
    env = {**os.environ, "PYTHONPATH": str(broken)}  # the driver never imports soundfile; the tasks do
    done = subprocess.run(
        [sys.executable, "-m", "dltool", "ingest", str(ROOT / "configs" / "audio.yaml"), "--output", str(tmp_path / "out"),
         "--json"], env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    message = json.loads(done.stdout)["message"]
    assert "the audio reader cannot run on this executor (ImportError: libsndfile could not be loaded" in message
    assert "\n" not in message and not (tmp_path / "out").exists()


def test_a_local_file_ingest_imports_neither_pandas_nor_pyarrow_compute(tmp_path):
    """Neither in the command nor in the tasks it forks: pa.array imports pandas, a cast pyarrow.compute, which
    cost a first ingest of 20k small images 0.25 s (docs/benchmarks.md)."""
    import subprocess
    import sys

    seen = tmp_path / "imported.txt"
    watch = f"""
import sys
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name in ("pandas", "pyarrow.compute"):
            with open({str(seen)!r}, "a") as f:
                f.write(name + "\\n")
sys.meta_path.insert(0, Watch())
from dltool.cli import main
sys.argv = ["dltool", "ingest", {str(ROOT / "configs" / "images.yaml")!r}, "--data", {str(tmp_path / "out")!r},
            "--json", "--master", "local[2]"]
main()
"""
    done = subprocess.run([sys.executable, "-c", watch], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["counts"]["rows"] == 1072
    assert not seen.exists(), seen.read_text()


def test_a_python_caller_that_used_opencvs_threads_can_ingest(tmp_path):
    """A forked task used to hang for good in `cv2.setNumThreads(1)` when its parent had OpenCV's thread pool idle
    (spark.local._fork_safe takes it down for the fork). The caller's own thread count is set back after."""
    import subprocess
    import sys

    caller = f"""
import time
import cv2
import numpy as np
import dltool
cv2.setNumThreads(2)
cv2.resize(np.zeros((2000, 2000, 3), np.uint8), (1000, 1000))  # OpenCV's pool starts
time.sleep(1)  # and its workers go to sleep on their condition variable
result = dltool.ingest({str(ROOT / "configs" / "images.yaml")!r}, dataset__path={str(tmp_path / "out")!r},
                       spark__master="local[2]")
print(result.counts.rows, cv2.getNumThreads())
"""
    done = subprocess.run([sys.executable, "-c", caller], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1072", "2"]


def test_a_second_ingest_of_the_same_dataset_fails_at_once(spark, tmp_path, write_config, hostile_images):
    from dltool.storage.fs import open_location
    from dltool.storage.ownership import OutputLock

    root, _ = hostile_images
    config = {"name": "x", "dataset": {"path": str(tmp_path / "busy"), "max_bad_fraction": 0.5},
              "ingest": {"reader": "image", "input": str(root), "size": [8, 8]}}  # fmt: skip
    with OutputLock(open_location(str(tmp_path / "busy"))):  # another command is writing it
        result, summary = ingest(write_config(config))
    assert result.exit_code == 1 and "another dltool command is writing it" in summary["message"]
    assert not (tmp_path / "busy").exists() and not list(tmp_path.glob("busy.staging-*"))
