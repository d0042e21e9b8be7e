"""Object-store benchmark: listing and image ingest on an S3-compatible server, next to local disk, one run.

The server is moto's (`moto_server`, started here in its own process on 127.0.0.1, like the tests'
fixture but out of this process's GIL). It is not S3: its absolute rates say little about AWS,
so each dltool figure is printed next to the plain-library way on the same server.

- listing: N objects (default 20,000) in 10 prefixes. pyarrow's own recursive `get_file_info`
  (the ceiling: one paginated LIST per 1,000 keys) against dltool's `list_files` (the same
  listing plus pattern matching, hidden-name filtering and sorting), and the same files on
  local disk. Peak Python memory of the call by tracemalloc.
- ingest: the sample images (600 files) read from the store and written as a dataset to the
  store, against the same ingest local disk to local disk; and a plain single-process loop that
  downloads every file with pyarrow (the store's raw read rate).

    .venv/bin/python bench/storage.py                 # 20,000 objects
    .venv/bin/python bench/storage.py --objects 2000  # quick
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "bench"
KEYS = {"AWS_ACCESS_KEY_ID": "AKIABENCH", "AWS_SECRET_ACCESS_KEY": "bench-secret"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server() -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)  # waiting for the server to listen
    server.kill()
    raise SystemExit("moto_server did not start")


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def peak_mb(fn) -> tuple[object, float, float]:
    """The value, the seconds (timed alone: tracemalloc slows Python code, not pyarrow's C++) and the peak MB."""
    value, seconds = timed(fn)
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return value, seconds, peak


def bench_listing(fs, endpoint: str, storage: dict, objects: int, work: Path) -> None:
    import boto3  # installed with moto
    import pyarrow.fs as pafs

    from dltool.storage.fs import list_files, open_location
    from dltool.storage.stores import storage_scope

    names = [f"c{i % 10}/{i:06d}.png" for i in range(objects)]
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")

    def put(name: str) -> None:  # one PUT (pyarrow's writes are multipart uploads: three requests)
        client.put_object(Bucket=BUCKET, Key=f"list/{name}", Body=b"x")

    print(f"uploading {objects} objects ...", flush=True)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, names))
    local = work / "list"
    for name in names:
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(b"x")

    for _ in range(2):  # the second round is the one printed: both sides warm
        raw, raw_s, raw_mb = peak_mb(lambda: fs.get_file_info(pafs.FileSelector(f"{BUCKET}/list", recursive=True)))
        with storage_scope(storage):
            (listed, _), ours_s, ours_mb = peak_mb(lambda: list_files(open_location(f"s3://{BUCKET}/list"), ["*.png"]))
        (on_disk, _), disk_s, disk_mb = peak_mb(lambda: list_files(open_location(str(local)), ["*.png"]))
    assert len(listed) == len(on_disk) == objects and len(raw) == objects + 10  # + the 10 prefixes
    print(f"\nlisting {objects} objects")
    print(f"  pyarrow get_file_info (ceiling)  {raw_s:6.2f} s  {objects / raw_s:9,.0f} objects/s  peak {raw_mb:5.1f} MB")
    print(f"  dltool list_files on the store   {ours_s:6.2f} s  {objects / ours_s:9,.0f} objects/s  peak {ours_mb:5.1f} MB"
          f"   x{raw_s / ours_s:.2f} of the ceiling")  # fmt: skip
    print(f"  dltool list_files on local disk  {disk_s:6.2f} s  {objects / disk_s:9,.0f} objects/s  peak {disk_mb:5.1f} MB")


def bench_ingest(fs, storage: dict, work: Path) -> None:
    import yaml

    from dltool.config.models import ExperimentConfig, SparkSettings
    from dltool.ingest.run import run_ingest
    from dltool.spark.session import spark_session
    from dltool.storage.stores import storage_scope

    images = ROOT / "sample_data" / "images"
    files = sorted(p for p in images.rglob("*") if p.is_file())

    def put(path: Path) -> None:
        with fs.open_output_stream(f"{BUCKET}/raw/images/{path.relative_to(images).as_posix()}") as f:
            f.write(path.read_bytes())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, files))

    def download_all() -> int:
        total = 0
        for path in files:
            with fs.open_input_stream(f"{BUCKET}/raw/images/{path.relative_to(images).as_posix()}") as f:
                total += len(f.read())
        return total

    base = yaml.safe_load((ROOT / "configs" / "images.yaml").read_text())
    base["spark"] = {"master": "local[2]", "conf": {"spark.ui.enabled": False}}
    base.pop("train")

    def config(source: str, target: str) -> ExperimentConfig:
        data = {**base, "storage": storage, "ingest": {**base["ingest"], "input": source},
                "dataset": {**base["dataset"], "path": target}}  # fmt: skip
        return ExperimentConfig.model_validate(data)

    with storage_scope(storage):
        spark_session(SparkSettings(master="local[2]", conf={"spark.ui.enabled": False}))
    on_store = config(f"s3://{BUCKET}/raw/images", f"s3://{BUCKET}/datasets/digits")
    on_disk = config(str(images), str(work / "digits"))
    rounds = {"store": [], "disk": [], "download": []}
    for _ in range(2):  # alternated; the first round warms Spark's Python workers
        for side, cfg in (("store", on_store), ("disk", on_disk)):
            summary, seconds = timed(lambda: run_ingest(cfg, overwrite=True, progress=False))
            assert summary.status == "written" and summary.counts.ok == len(files), summary
            rounds[side].append(seconds)
        rounds["download"].append(timed(download_all)[1])
    store, disk, download = (min(v) for v in rounds.values())
    n = len(files)
    print(f"\ningest of {n} sample images (decode, resize to 32x32, one augmented copy), best of 2")
    print(f"  plain pyarrow download loop, 1 process   {download:6.2f} s  {n / download:7.0f} files/s")
    print(f"  dltool ingest, store -> store            {store:6.2f} s  {n / store:7.0f} images/s")
    print(f"  dltool ingest, local disk -> local disk  {disk:6.2f} s  {n / disk:7.0f} images/s   store/disk x{disk / store:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=20_000)
    parser.add_argument("--only", choices=["listing", "ingest"])
    args = parser.parse_args()
    os.environ.update(KEYS)  # the server takes any key; every process of the benchmark signs with these
    server, endpoint = start_server()
    work = Path(tempfile.mkdtemp(prefix="dltool-bench-storage-"))
    try:
        import pyarrow.fs as pafs

        fs = pafs.S3FileSystem(endpoint_override=endpoint.split("://")[1], scheme="http", region="us-east-1",
                               allow_bucket_creation=True)  # fmt: skip
        fs.create_dir(BUCKET)
        storage = {"endpoint_url": endpoint, "region": "us-east-1"}
        print(f"moto_server at {endpoint}; load before start: {os.getloadavg()[0]:.2f}")
        if args.only in (None, "listing"):
            bench_listing(fs, endpoint, storage, args.objects, work)
        if args.only in (None, "ingest"):
            bench_ingest(fs, storage, work)
    finally:
        server.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
