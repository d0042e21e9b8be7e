"""Ingest benchmark: dltool on Spark local[2] against the bare-library ceiling, same data, one run.

What it measures (see docs/benchmarks.md for results and DESIGN.md "Performance"):

- image: N small JPEG/PNG files in 10 class folders -> 32x32x3 uint8 shards. dltool's
  `run_ingest` against a single-process loop of file read + cv2.imdecode + cv2.resize;
  the 2-core ceiling is twice the loop's rate. Also dltool's own decode (no Spark), one core.
- csv: a generated CSV (8 numeric + 2 categorical columns + label, ~1% missing) through the
  csv reader, against pyarrow.csv.read_csv + pyarrow.parquet.write_table (zstd), which uses
  both cores itself.
- audio: N 1 s mono WAV clips at 22050 Hz -> 16 kHz waveforms. dltool against a loop of
  soundfile.read + soxr.resample (HQ); ceiling = 2 x the loop.
- table: a 14-column CSV (numbers with gaps, a timestamp, strings, a label; 1M rows) through the
  csv and table readers, against the hand-written PySpark ML pipeline (Imputer, StringIndexer,
  OneHotEncoder, VectorAssembler, hash split, Parquet) in the same session; and from the shell,
  `dltool ingest` against the same pipeline as a script of its own, each with its Spark start.
- text: N short documents (a JSON-lines table: id, text, label; Zipf-distributed words) ->
  vocabulary fitted on train, 64 int32 ids per document. dltool's text reader against a
  single-process Python loop doing the same (json.loads, the same tokeniser, counts, vocabulary,
  ids, pyarrow Parquet write; ceiling = 2 x the loop), and against plain Spark ML (read JSON,
  regexp_replace punctuation, RegexTokenizer, CountVectorizer fitted on train, write Parquet).

The Spark session is created first and timed on its own (run_ingest reuses it). Rates are
printed without and with that start-up. Image and audio ingests run twice: the first ingest in
the session (cold: it pays for starting Python workers) and a warm rerun. Peak memory: the driver's ru_maxrss (lifetime, so run
one section per process for clean figures) and VmHWM of the JVM and Python workers below it
(read from /proc while they are alive: RUSAGE_CHILDREN would see nothing, as the workers are
children of the JVM, which is not reaped before the benchmark ends).
Data is generated deterministically into --work (default bench/_data/) and reused.

    .venv/bin/python bench/ingest.py --images 20000 --csv-rows 1000000 --audio 2000
    .venv/bin/python bench/ingest.py --images 300 --only image      # fixed costs
    .venv/bin/python bench/ingest.py --only text --texts 100000
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np

CLASSES = [f"c{i}" for i in range(10)]


def mb(kib: int) -> str:
    return f"{kib / 1024:.0f} MB"


def driver_peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def tree_peaks() -> str:
    """Peak RSS (VmHWM) of the JVM and of the Python workers started under this process."""
    children: dict[int, list[int]] = {}
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(p))
    jvm, workers, stack = 0, [], list(children.get(os.getpid(), []))
    while stack:
        pid = stack.pop()
        stack += children.get(pid, [])
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
            hwm = next(int(ln.split()[1]) for ln in status if ln.startswith("VmHWM"))
        except (OSError, StopIteration):
            continue
        if comm == "java":
            jvm = max(jvm, hwm)
        elif comm.startswith("python"):
            workers.append(hwm)
    top = max(workers, default=0)
    return f"JVM peak {mb(jvm)}, Python workers peak {mb(top)} each ({len(workers)} processes)"


# ---------------------------------------------------------------- data generation

def make_images(root: Path, n: int) -> Path:
    import cv2

    out = root / f"images-{n}"
    if (out / ".done").exists():
        return out
    for c in CLASSES:
        (out / c).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng(i)
        cls = i % 10
        img = np.empty((64, 64, 3), np.uint8)
        img[:] = rng.integers(0, 256, 3, dtype=np.uint8)
        img = cv2.add(img, rng.integers(0, 40, (64, 64, 3), dtype=np.uint8))  # texture
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        x, y, r = (int(v) for v in rng.integers([16, 16, 6], [48, 48, 20]))
        if cls % 3 == 0:
            cv2.circle(img, (x, y), r, color, -1)
        elif cls % 3 == 1:
            cv2.rectangle(img, (x - r, y - r), (x + r, y + r), color, -1)
        else:
            cv2.line(img, (x - r, y - r), (x + r, y + r), color, 1 + cls // 3)
        ext, params = (".png", []) if i % 10 == 9 else (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90])
        (out / CLASSES[cls] / f"img_{i:06d}{ext}").write_bytes(cv2.imencode(ext, img, params)[1].tobytes())
    (out / ".done").touch()
    return out


def make_csv(root: Path, rows: int) -> Path:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    out = root / f"table-{rows}.csv"
    if out.exists():
        return out
    rng = np.random.default_rng(0)
    cols = {}
    for j in range(8):
        values = np.round(rng.normal(j, 1 + j, rows), 4)
        cols[f"x{j}"] = pa.array(values, mask=rng.random(rows) < 0.01)
    for name, k in (("cat_a", 5), ("cat_b", 20)):
        labels = np.array([f"{name}_{v}" for v in range(k)])[rng.integers(0, k, rows)]
        cols[name] = pa.array(labels, mask=rng.random(rows) < 0.01)
    cols["label"] = pa.array(np.array(["no", "yes", "maybe"])[rng.integers(0, 3, rows)])
    pacsv.write_csv(pa.table(cols), out, pacsv.WriteOptions(quoting_style="needed"))
    return out


CITIES = ["Zürich", "São Paulo", "Kraków", "Москва", "東京", "Málaga", "Reykjavík", "İstanbul", "Łódź", "Åre",
          "København", "Besançon", "Göteborg", "Niš", "Αθήνα", "Chişinău", "Düsseldorf", "Québec", "Ñuñoa", "Oslo"]


def make_table(root: Path, rows: int) -> Path:
    """The issue's 14-column CSV: an id, a timestamp, 8 numbers, a non-ASCII city, a plan, quoted
    free text with commas and quotes, and a label; 1-8% of the values missing."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    out = root / f"table14-{rows}.csv"
    if out.exists():
        return out
    rng = np.random.default_rng(1)
    missing = lambda p: rng.random(rows) < p  # noqa: E731
    cols = {"customer_id": pa.array([f"C{i:08d}" for i in range(rows)])}
    seconds = rng.integers(1_600_000_000, 1_700_000_000, rows).astype("datetime64[s]")
    cols["signup_ts"] = pa.array(np.datetime_as_string(seconds), mask=missing(0.02))
    for j, name in enumerate(["age", "tenure", "monthly", "total", "calls", "drops", "score", "balance"]):
        values = np.round(rng.normal(10 * j, 1 + j, rows), 3)
        cols[name] = pa.array(values, mask=missing(0.01 + 0.01 * j))
    cols["city"] = pa.array(np.array(CITIES)[rng.integers(0, len(CITIES), rows)], mask=missing(0.03))
    cols["plan"] = pa.array(np.array(["basic", "plus", "pro", "team", "edu"])[rng.integers(0, 5, rows)], mask=missing(0.05))
    words = np.array(["late", "bill", "\"great\" service", "slow, again", "ok", "résumé", "thanks", "cancel?"])
    picks = rng.integers(0, len(words), (rows, 3))
    cols["comment"] = pa.array([" ".join(words[p]) for p in picks], mask=missing(0.08))
    cols["churn"] = pa.array(np.array(["no", "yes"])[(rng.random(rows) < 0.3).astype(int)])
    pacsv.write_csv(pa.table(cols), out, pacsv.WriteOptions(quoting_style="needed"))
    return out


def make_audio(root: Path, n: int, rate: int = 22050) -> Path:
    import soundfile

    out = root / f"audio-{n}"
    if (out / ".done").exists():
        return out
    t = np.arange(rate) / rate
    for i in range(n):
        rng = np.random.default_rng(i)
        kind = ("tone", "chirp", "noise")[i % 3]
        f = rng.uniform(200, 2000)
        if kind == "noise":
            wave = rng.normal(0, 0.3, rate)
        else:
            wave = np.sin(2 * np.pi * f * t * (1 + t if kind == "chirp" else 1))
        (out / kind).mkdir(parents=True, exist_ok=True)
        soundfile.write(out / kind / f"clip_{i:05d}.wav", (0.5 * wave).astype(np.float32), rate, subtype="PCM_16")
    (out / ".done").touch()
    return out


# ---------------------------------------------------------------- the two sides

def make_texts(root: Path, n: int) -> Path:
    """n documents of 8-40 words drawn from a Zipf-like law over 20,000 words, as JSON lines in 4 files."""
    import json

    folder = root / f"text-{n}"
    if folder.exists():
        return folder
    rng = np.random.default_rng(7)
    words = np.array([f"w{i}" for i in range(20000)])
    p = 1.0 / np.arange(1, 20001)
    p /= p.sum()
    tmp = folder.with_suffix(".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for part in range(4):
        lines = []
        for i in range(part, n, 4):
            doc = words[rng.choice(20000, int(rng.integers(8, 41)), p=p)]
            label = "pos" if i % 2 else "neg"
            lines.append(json.dumps({"id": f"d{i}", "text": " ".join(doc).capitalize() + ".", "label": label}))
        (tmp / f"part-{part}.jsonl").write_text("\n".join(lines) + "\n")
    tmp.rename(folder)
    return folder


TEXT_LENGTH, TEXT_TOKENS = 64, 20000


def bare_text(folder: Path, out: Path) -> float:
    """Seconds for one process doing the text ingest's work: parse, tokenise, count train, vocabulary, ids, write."""
    import json
    from collections import Counter

    import pyarrow as pa
    import pyarrow.parquet as pq

    from dltool.splits import split_point
    from dltool.transforms.text import Tokenizer, Vocabulary, fit_vocabulary

    start = time.perf_counter()
    tokenizer, docs = Tokenizer(), []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.open(encoding="utf-8"):
            row = json.loads(line)
            docs.append((row["id"], tokenizer.tokens(row["text"]), row["label"]))
    counts = Counter()
    for key, tokens, _ in docs:
        if split_point(key) < 0.8:
            counts.update(tokens)
    vocabulary = Vocabulary(tuple(fit_vocabulary(counts, TEXT_TOKENS)))
    ids = vocabulary.sequences([tokens for _, tokens, _ in docs], TEXT_LENGTH)
    offsets = pa.array(np.arange(len(docs) + 1, dtype=np.int32) * TEXT_LENGTH)
    table = pa.table({"features": pa.ListArray.from_arrays(offsets, pa.array(ids.reshape(-1))),
                      "label": pa.array([int(label == "pos") for _, _, label in docs], pa.int32()),
                      "key": pa.array([key for key, _, _ in docs])})  # fmt: skip
    pq.write_table(table, out, compression="zstd")
    return time.perf_counter() - start


def plain_spark_ml_text(spark, folder: Path, out: Path) -> float:
    """Seconds for the Spark ML way: tokens by RegexTokenizer, a CountVectorizer fitted on train, Parquet."""
    from pyspark.ml.feature import CountVectorizer, RegexTokenizer
    from pyspark.sql import functions as F

    start = time.perf_counter()
    df = spark.read.json(str(folder))
    df = df.withColumn("clean", F.regexp_replace("text", r"[!\"#$%&()*+,\-./:;<=>?@\[\\\]^_`{|}~']", ""))
    bucket = F.abs(F.hash("id")) % 100
    df = df.withColumn("split", F.when(bucket < 80, "train").when(bucket < 90, "val").otherwise("test"))
    df = RegexTokenizer(inputCol="clean", outputCol="tokens", pattern="\\s+", toLowercase=True).transform(df)
    model = CountVectorizer(inputCol="tokens", outputCol="features", vocabSize=TEXT_TOKENS).fit(df.where("split = 'train'"))
    (model.transform(df).select("features", (F.col("label") == "pos").cast("int").alias("label"), "id", "split")
     .write.mode("overwrite").option("compression", "zstd").partitionBy("split").parquet(str(out)))  # fmt: skip
    return time.perf_counter() - start


def run_dltool(work: Path, name: str, ingest_yaml: str, runs: int = 1) -> list[float]:
    """Seconds for each of `runs` run_ingest calls (the session already exists and is reused)."""
    from dltool.config.loader import load_config
    from dltool.ingest.run import run_ingest

    cfg = work / "configs" / f"{name}.yaml"
    cfg.parent.mkdir(exist_ok=True)
    cfg.write_text(f"name: bench-{name}\nspark:\n  master: local[2]\n"
                   f"dataset:\n  path: {work / 'out' / name}\n{ingest_yaml}")  # fmt: skip
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        summary = run_ingest(load_config(cfg), overwrite=True, progress=False)
        times.append(time.perf_counter() - start)
        print(f"  dltool {name}: {summary.counts.rows} rows, {summary.counts.quarantined} quarantined, "
              f"{times[-1]:.1f} s")  # fmt: skip
    return times


def bare_images(folder: Path, size: int) -> tuple[float, float]:
    """Seconds for the bare OpenCV loop, and for dltool's own decode+resize, both on one core."""
    import cv2

    from dltool.readers import ImageReaderConfig
    from dltool.readers.base import reader_for

    cv2.setNumThreads(1)
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".jpg", ".png"))
    start = time.perf_counter()
    for p in files:
        img = cv2.imdecode(np.frombuffer(p.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    bare = time.perf_counter() - start
    reader = reader_for(ImageReaderConfig(reader="image", input=str(folder), size=(size, size)))
    reader.setup()
    start = time.perf_counter()
    for p in files:
        reader.decode(p.read_bytes(), p.name)
    return bare, time.perf_counter() - start


def bare_audio(folder: Path, rate: int) -> float:
    import soundfile
    import soxr

    start = time.perf_counter()
    for p in sorted(folder.rglob("*.wav")):
        wave, sr = soundfile.read(p, dtype="float32", always_2d=True)
        soxr.resample(wave, sr, rate, quality="HQ")
    return time.perf_counter() - start


def pyarrow_csv(path: Path, out: Path) -> float:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    start = time.perf_counter()
    pq.write_table(pacsv.read_csv(path), out, compression="zstd")
    return time.perf_counter() - start


TABLE_NUMERIC = ["age", "tenure", "monthly", "total", "calls", "drops", "score", "balance"]


def plain_pyspark_ml(spark, path: Path, out: Path) -> float:
    """The hand-written PySpark ML pipeline a practitioner writes for the same job, in seconds:
    read the CSV, cast, hash split on the id, Imputer + StringIndexer + OneHotEncoder +
    VectorAssembler fitted on train, features as float arrays, Parquet per split."""
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import Imputer, OneHotEncoder, StringIndexer, VectorAssembler
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    start = time.perf_counter()
    df = spark.read.option("header", True).option("escape", '"').csv(str(path))
    df = df.select("customer_id", *[F.col(c).cast("double").alias(c) for c in TABLE_NUMERIC], "city", "plan", "churn")
    bucket = F.abs(F.hash("customer_id")) % 100
    df = df.withColumn("split", F.when(bucket < 80, "train").when(bucket < 90, "val").otherwise("test"))
    imputed = [f"{c}_imp" for c in TABLE_NUMERIC]
    stages = [Imputer(inputCols=TABLE_NUMERIC, outputCols=imputed),
              StringIndexer(inputCols=["city", "plan", "churn"], outputCols=["city_i", "plan_i", "label"],
                            handleInvalid="keep"),
              OneHotEncoder(inputCols=["city_i", "plan_i"], outputCols=["city_v", "plan_v"], handleInvalid="keep"),
              VectorAssembler(inputCols=imputed + ["city_v", "plan_v"], outputCol="features")]  # fmt: skip
    model = Pipeline(stages=stages).fit(df.where(F.col("split") == "train"))
    (model.transform(df)
     .select(vector_to_array("features", "float32").alias("features"), F.col("label").cast("int"), "customer_id", "split")
     .write.mode("overwrite").option("compression", "zstd").partitionBy("split").parquet(str(out)))  # fmt: skip
    return time.perf_counter() - start


def small_csv_cli(work: Path, rows: int = 142) -> float:
    """Seconds for `dltool ingest` of a small CSV from the shell, Spark's start included."""
    return _from_the_shell(_dltool_ingest_command(work, "table-small", make_table(work, rows)))


def table_from_the_shell(work: Path, path: Path) -> tuple[float, float]:
    """Seconds for `dltool ingest` of the table from a shell, and for the plain PySpark ML pipeline as a script of
    its own (`--plain-table`, a default `SparkSession.builder` on local[2]): each with Python's and Spark's start."""
    import sys

    plain = [sys.executable, __file__, "--plain-table", str(path), "--work", str(work)]
    return _from_the_shell(_dltool_ingest_command(work, "table14-shell", path)), _from_the_shell(plain)


def _dltool_ingest_command(work: Path, name: str, path: Path) -> list[str]:
    """`dltool ingest --overwrite` of the CSV at `path` (TABLE_YAML's columns) on local[2], its config written."""
    import sys

    cfg = work / "configs" / f"{name}.yaml"
    cfg.parent.mkdir(exist_ok=True)
    cfg.write_text(f"name: bench-{name}\nspark:\n  master: local[2]\ndataset:\n  path: {work / 'out' / name}\n"
                   + TABLE_YAML.format(path))  # fmt: skip
    return [sys.executable, "-m", "dltool", "ingest", str(cfg), "--overwrite", "--json"]


def _from_the_shell(command: list[str]) -> float:
    """Seconds `command` takes as a process of its own; its stderr's tail if it fails."""
    import subprocess

    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[1:4])} failed: {done.stderr.strip()[-2000:]}")
    return took


def plain_table_script(path: Path, work: Path) -> None:
    """The plain pipeline as a user's script runs it: a default session, the pipeline, done."""
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.master("local[2]").appName("plain-pyspark-ml").getOrCreate()
    plain_pyspark_ml(spark, path, work / "out" / "plain-pyspark-ml-shell")
    spark.stop()


TABLE_YAML = ("ingest:\n  reader: csv\n  input: {}\n  numeric: [" + ", ".join(TABLE_NUMERIC) + "]\n"
              "  categorical: [city, plan]\n  label: churn\n  key_column: customer_id\n")  # fmt: skip


# ---------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--csv-rows", type=int, default=1_000_000)
    ap.add_argument("--audio", type=int, default=2000)
    ap.add_argument("--table-rows", type=int, default=1_000_000)
    ap.add_argument("--texts", type=int, default=100_000)
    ap.add_argument("--only", choices=["image", "csv", "audio", "table", "text"])
    ap.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / "_data")
    ap.add_argument("--plain-table", type=Path, help=argparse.SUPPRESS)  # table_from_the_shell's plain side
    args = ap.parse_args()
    work = args.work.resolve()
    if args.plain_table:
        return plain_table_script(args.plain_table, work)
    sections = [args.only] if args.only else ["image", "csv", "audio", "table", "text"]
    work.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    data = {"image": lambda: make_images(work, args.images), "csv": lambda: make_csv(work, args.csv_rows),
            "audio": lambda: make_audio(work, args.audio), "table": lambda: make_table(work, args.table_rows),
            "text": lambda: make_texts(work, args.texts)}  # fmt: skip
    paths = {s: data[s]() for s in sections}
    print(f"data ready in {work} ({time.perf_counter() - t:.1f} s); driver RSS before Spark {mb(driver_peak_kib())}")

    from dltool.config.models import SparkSettings
    from dltool.spark.session import spark_session

    rows = []

    def report(section, n, unit, times, bare_rate, ceiling, peak, extra=""):
        dl = times[0]
        rate, ratio = n / dl, n / dl / ceiling
        bare_text = "-" if bare_rate is None else f"{bare_rate:,.0f}"
        warm = n / times[1] if len(times) > 1 else None
        if warm:
            extra = f"; warm rerun {warm:,.0f} {unit}/s (ratio {warm / ceiling:.2f})" + extra
        line = (f"{section} ingest: dltool {rate:,.0f} {unit}/s, bare 1 core {bare_text} {unit}/s, "
                f"ceiling (2 cores) {ceiling:,.0f} {unit}/s, ratio {ratio:.2f} "
                f"(spark start-up {startup:.1f} s excluded; with it {n / (dl + startup):,.0f} {unit}/s){extra}")  # fmt: skip
        print(line)
        print(f"  driver peak RSS {mb(peak)} (after dltool, before any in-process ceiling); {tree_peaks()}")
        rows.append((section, f"{n:,}", f"{rate:,.0f}", f"{n / (dl + startup):,.0f}", f"{warm:,.0f}" if warm else "-",
                     bare_text, f"{ceiling:,.0f}", f"{ratio:.2f}", f"{warm / ceiling:.2f}" if warm else "-",
                     f"{dl:.1f}", mb(peak)))  # fmt: skip

    if "table" in sections:  # first: its runs from the shell start their own Spark, before this process starts one
        small = [small_csv_cli(work) for _ in range(3)]
        shell = [table_from_the_shell(work, paths["table"]) for _ in range(2)]  # alternated
        for dl, plain in shell:
            print(f"  {args.table_rows:,}-row table from the shell: dltool ingest {dl:.1f} s, plain PySpark ML script {plain:.1f} s, "
                  f"ratio {plain / dl:.2f}")  # fmt: skip

    t = time.perf_counter()
    spark = spark_session(SparkSettings(master="local[2]"))
    startup = time.perf_counter() - t
    print(f"spark session start-up {startup:.1f} s")

    if "image" in sections:
        bare, decode = bare_images(paths["image"], 32)
        yaml = "ingest:\n  reader: image\n  input: {}\n  size: [32, 32]\n  channels: 3\n  resize: stretch\n"
        dl = run_dltool(work, f"image-{args.images}", yaml.format(paths["image"]), runs=2)
        n, peak = args.images, driver_peak_kib()
        alone = f"; dltool decode alone (no Spark) 1 core {n / decode:,.0f} img/s"
        report("image", n, "img", dl, n / bare, 2 * n / bare, peak, alone)

    if "csv" in sections:
        yaml = ("ingest:\n  reader: csv\n  input: {}\n  numeric: [x0, x1, x2, x3, x4, x5, x6, x7]\n"
                "  categorical: [cat_a, cat_b]\n  label: label\n")  # fmt: skip
        dl = run_dltool(work, f"csv-{args.csv_rows}", yaml.format(paths["csv"]))
        peak = driver_peak_kib()  # the pyarrow ceiling holds the whole table in this process: measure before it
        ceiling = args.csv_rows / pyarrow_csv(paths["csv"], work / "out" / "pyarrow.parquet")
        note = " (ceiling: pyarrow read_csv + write_table, both cores)"
        report("csv", args.csv_rows, "rows", dl, None, ceiling, peak, note)

    if "audio" in sections:
        bare = bare_audio(paths["audio"], 16000)
        yaml = "ingest:\n  reader: audio\n  input: {}\n  sample_rate: 16000\n  duration: 1.0\n  features: waveform\n"
        dl = run_dltool(work, f"audio-{args.audio}", yaml.format(paths["audio"]), runs=2)
        n = args.audio
        report("audio", n, "clips", dl, n / bare, 2 * n / bare, driver_peak_kib())

    if "table" in sections:
        n = args.table_rows
        times = {"plain": [], "csv": [], "table": []}
        table_yaml = (TABLE_YAML.replace("reader: csv", "reader: table\n  format: csv").format(paths["table"])
                      + "  options: {header: 'true', escape: '\"'}\n")  # fmt: skip
        for _ in range(2):  # alternate, so neither side gets all the warm runs
            times["plain"].append(plain_pyspark_ml(spark, paths["table"], work / "out" / "plain-pyspark-ml"))
            print(f"  plain PySpark ML pipeline: {times['plain'][-1]:.1f} s")
            times["csv"] += run_dltool(work, f"table14-{n}", TABLE_YAML.format(paths["table"]))
            times["table"] += run_dltool(work, f"table14-{n}-table", table_yaml)
        best = {k: min(v) for k, v in times.items()}
        ceiling = n / best["plain"]
        note = (f" (ceiling: the plain PySpark ML pipeline, best of {' and '.join(f'{t:.1f}' for t in times['plain'])} s; "
                f"dltool best of {' and '.join(f'{t:.1f}' for t in times['csv'])} s; `reader: table` best of "
                f"{' and '.join(f'{t:.1f}' for t in times['table'])} s, ratio {best['plain'] / best['table']:.2f}; "
                f"142-row CSV from the shell incl. Spark start: {' then '.join(f'{t:.1f}' for t in small)} s; "
                f"from the shell, dltool {' and '.join(f'{d:.1f}' for d, _ in shell)} s against the plain script "
                f"{' and '.join(f'{p:.1f}' for _, p in shell)} s, ratio {min(p for _, p in shell) / min(d for d, _ in shell):.2f})")  # fmt: skip
        report("table", n, "rows", [best["csv"]], None, ceiling, driver_peak_kib(), note)

    if "text" in sections:
        n = args.texts
        yaml = (f"ingest:\n  reader: text\n  format: json\n  input: {paths['text']}\n  label_column: label\n"
                f"  key_column: id\n  sequence_length: {TEXT_LENGTH}\n  max_tokens: {TEXT_TOKENS}\n")  # fmt: skip
        times = {"plain": [], "dltool": []}
        for _ in range(2):  # alternate, so neither side gets all the warm runs
            times["plain"].append(plain_spark_ml_text(spark, paths["text"], work / "out" / "plain-spark-ml-text"))
            print(f"  plain Spark ML text pipeline: {times['plain'][-1]:.1f} s")
            times["dltool"] += run_dltool(work, f"text-{n}", yaml)
        peak = driver_peak_kib()  # the bare loop holds every document in this process: measure before it
        bare = bare_text(paths["text"], work / "out" / "bare-text.parquet")
        best = {k: min(v) for k, v in times.items()}
        note = (f" (plain Spark ML: RegexTokenizer + CountVectorizer + write, best of "
                f"{' and '.join(f'{t:.1f}' for t in times['plain'])} s: dltool runs at {best['plain'] / best['dltool']:.2f}x it; "
                f"dltool best of {' and '.join(f'{t:.1f}' for t in times['dltool'])} s)")  # fmt: skip
        report("text", n, "docs", [best["dltool"]], n / bare, 2 * n / bare, peak, note)

    spark.stop()
    print(f"\nspark session start-up {startup:.1f} s (not in the dltool times)\n")
    head = ("section", "n", "dltool/s", "incl. start-up", "warm rerun/s", "bare 1 core", "ceiling", "ratio", "ratio warm",
            "dltool s", "driver peak")  # fmt: skip
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(str(v).rjust(w) for v, w in zip(r, widths)))


if __name__ == "__main__":
    main()
