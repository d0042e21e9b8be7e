"""Build the three data layouts of examples/ from the bundled samples and run each end to end.

    .venv/bin/python examples/layouts.py            # writes out/layouts/, prints one line per layout

1. images in train/ and test/ folders (split: by path; val carved from train), then the test
   folder scored again as held-out raw input (eval --input): the same figures;
2. the churn CSV with a `fold` column (split: by column);
3. audio clips in one folder per speaker (split: the stable hash of the speaker: no speaker in two splits).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "layouts"


def dltool(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "dltool", *args, "--json"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"dltool {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-600:]}")
    return json.loads(done.stdout)


def config(name: str, base: str, data: Path, split: dict, **ingest) -> Path:
    cfg = yaml.safe_load((ROOT / "configs" / f"{base}.yaml").read_text())
    cfg["name"] = name
    cfg["dataset"] = {"path": str(OUT / "datasets" / name), "split": split}
    cfg["ingest"].update(input=str(data), **ingest)
    cfg["train"]["run_dir"] = str(OUT / "runs" / name)
    path = OUT / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run(path: Path, held_out: Path | None = None) -> str:
    ingest = dltool("ingest", str(path), "--overwrite")
    dltool("train", str(path), "--overwrite")
    scores = dltool("eval", str(path))["checkpoints"][0]["metrics"]
    line = (f"splits {ingest['splits']}, {ingest['counts']['quarantined']} quarantined, warnings {ingest['warnings']}; "
            f"test accuracy {scores['accuracy']:.3f}")  # fmt: skip
    if held_out is not None:
        again = dltool("eval", str(path), "--input", str(held_out))["checkpoints"][0]["metrics"]
        line += f"; eval --input {held_out.name}/: accuracy {again['accuracy']:.3f} on {again['examples']} files"
    return line


def build_layouts(out: Path) -> dict[str, Path]:
    """The three layouts made from the bundled samples under `out`: images/{train,test}/<class>/, a CSV with a
    `fold` column, audio/<speaker>/<word>/."""
    images = out / "images"
    for folder in sorted((ROOT / "sample_data" / "images").iterdir()):
        for i, file in enumerate(sorted(folder.iterdir())):
            target = images / ("test" if i % 5 == 0 else "train") / folder.name / file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(file, target)

    table = out / "customers.csv"
    with open(ROOT / "sample_data" / "tabular" / "customers.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*header, "fold"])
        writer.writerows([*row, ("train", "train", "train", "valid", "holdout")[i % 5]] for i, row in enumerate(rows))

    audio = out / "audio"
    for folder in sorted((ROOT / "sample_data" / "audio").iterdir()):
        for i, file in enumerate(sorted(folder.iterdir())):
            target = audio / f"spk{i % 30:02d}" / folder.name / file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(file, target)
    return {"images": images, "table": table, "audio": audio}


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    data = build_layouts(OUT / "data")
    images = data["images"]
    print("folders train/ + test/:", run(config("layout-folders", "images", images, {"by": "path"}), images / "test"))
    split = {"by": "column", "column": "fold", "names": {"holdout": "test"}}
    print("CSV with a fold column:", run(config("layout-column", "csv", data["table"], split)))
    split = {"group": r"^(spk\d+)/"}
    print("audio grouped by speaker:", run(config("layout-speakers", "audio", data["audio"], split)))


if __name__ == "__main__":
    main()
