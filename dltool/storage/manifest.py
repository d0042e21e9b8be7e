"""The dataset manifest: versioned JSON that describes shards, and the commit markers.

`Manifest` is the typed form of `_manifest.json` (docs/format.md): `to_json` writes the
keys in the documented order, `from_json` reads them back, so a manifest that is read
and written again is unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from dltool.config.redaction import redact, redact_text
from dltool.errors import InputNotFoundError
from dltool.storage.fs import Location, file_digest

if TYPE_CHECKING:
    from dltool.shards.codec import TensorSpec

MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"
FORMAT = "dltool-dataset"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")  # a dataset's splits, in this order everywhere
VERSIONS = "_versions"  # each version's manifest (vNNNNN.json) and, for file readers, its record index


def by_split(counts) -> dict[str, int]:
    """Counts per split name, in SPLITS order and without zeros (a version's files added, changed, removed)."""
    return {name: counts[name] for name in SPLITS if counts.get(name)}


def version_file(version: int, what: str = "json") -> str:
    """A version's file, relative to the dataset: its manifest (json) or its record index (records.parquet)."""
    return f"{VERSIONS}/v{version:05d}.{what}"


@dataclass(frozen=True)
class Label:
    """The label column: its kind and, for classes, the vocabulary (index = stored label)."""

    kind: str | None  # "class", "regression", or None when the dataset has no labels
    vocabulary: tuple[str, ...] | None = None

    @property
    def classes(self) -> int:
        return len(self.vocabulary or ())

    def to_json(self) -> dict:
        data = {"column": "label", "kind": self.kind}
        if self.vocabulary is not None:
            data["vocabulary"] = list(self.vocabulary)
        return data

    @classmethod
    def from_json(cls, data: dict) -> Label:
        vocabulary = data.get("vocabulary")
        return cls(data["kind"], None if vocabulary is None else tuple(vocabulary))


@dataclass(frozen=True)
class SplitEntry:
    """One split's shards: rows (augmented copies included), files relative to the dataset, rows per class."""

    rows: int
    files: tuple[str, ...]
    per_class: dict[str, int]  # "all" for regression or unlabelled data

    def to_json(self) -> dict:
        return {"rows": self.rows, "files": list(self.files), "per_class": dict(self.per_class)}

    @classmethod
    def from_json(cls, data: dict) -> SplitEntry:
        return cls(int(data["rows"]), tuple(data["files"]), dict(data["per_class"]))


@dataclass(frozen=True)
class Counts:
    """Where every input went; `inputs == ok + quarantined` holds for every written manifest."""

    inputs: int
    ok: int
    quarantined: int
    augmented: int
    rows: int
    left_out_by_patterns: int

    @property
    def bad_fraction(self) -> float:
        return self.quarantined / max(1, self.inputs)

    def to_json(self) -> dict:
        return {"inputs": self.inputs, "ok": self.ok, "quarantined": self.quarantined, "augmented": self.augmented,
                "rows": self.rows, "left_out_by_patterns": self.left_out_by_patterns}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict) -> Counts:
        return cls(**{f.name: int(data[f.name]) for f in fields(cls)})


@dataclass(frozen=True)
class Stats:
    """Train-split mean and std per position along `axis` of the features (for normalising in the model)."""

    axis: int
    count: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_json(self) -> dict:
        return {"axis": self.axis, "count": self.count, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_json(cls, data: dict) -> Stats:
        return cls(int(data["axis"]), int(data["count"]), tuple(data["mean"]), tuple(data["std"]))


@dataclass(frozen=True)
class Duplicates:
    """Identical records (same file bytes, or same typed row) found in more than one split."""

    records: int  # records whose content is also in another split
    contents: int  # distinct contents found in more than one split
    examples: tuple[dict, ...] = ()  # {"splits": [...], "keys": [...]} per content, 20 keys at most in all
    dropped: int = 0  # val and test records removed because train holds the same content (drop_from_eval)

    def to_json(self) -> dict:
        return {"records": self.records, "contents": self.contents, "examples": list(self.examples),
                "dropped": self.dropped}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict) -> Duplicates:
        return cls(int(data["records"]), int(data["contents"]), tuple(data["examples"]), int(data.get("dropped", 0)))

    def message(self) -> str:
        first = self.examples[0] if self.examples else {"keys": [], "splits": []}
        example = " and ".join(first["keys"][:2])
        return (f"{self.records} records have the same content as a record of another split "
                f"({self.contents} contents; e.g. {example} in {', '.join(first['splits'])})")


@dataclass(frozen=True)
class Manifest:
    """What a dataset is: its tensors, labels, shards per split, counts and the config that built it."""

    name: str
    created: str  # UTC, YYYY-MM-DDTHH:MM:SSZ
    dltool_version: str
    reader: str
    source: str
    features: TensorSpec
    feature_names: tuple[str, ...] | None  # one per slot for tables, else None
    label: Label
    passthrough: tuple[str, ...]
    splits: dict[str, SplitEntry]
    counts: Counts
    stats: Stats | None
    preprocess: str | None  # "_preprocess.json" for table datasets
    errors: str  # the error table's folder
    config_hash: str
    input_fingerprint: str
    ingest: dict  # the ingest section as validated
    status: str  # "ok" or "failed_quality"
    format_version: int = FORMAT_VERSION
    warnings: tuple[str, ...] = ()  # about the splits: an empty one, a class missing from val or test
    duplicates: Duplicates | None = None  # identical records across splits (None: none found)
    columns: dict | None = None  # table readers: {"numeric", "categorical", "left_out": {column: reason}} as used
    vocabulary: tuple[str, ...] | None = None  # text readers: the token of each id from 2 (0 padding, 1 out-of-vocabulary)
    shards: dict[str, dict] | None = None  # each shard file: {"size", "blake2b"}, filled in by write()
    version: int = 1  # this manifest's version of the dataset (each ingest that changes it adds one)
    versions: tuple[dict, ...] = ()  # every version so far: number, time, inputs' fingerprint, records added...

    def to_json(self) -> dict:
        return {
            "format": FORMAT, "format_version": self.format_version, "name": self.name, "created": self.created,
            "dltool_version": self.dltool_version, "reader": self.reader, "source": redact_text(self.source),
            "features": {"column": "features", **self.features.to_json(),
                         "names": None if self.feature_names is None else list(self.feature_names)},
            "label": self.label.to_json(), "key": {"column": "key"}, "passthrough": list(self.passthrough),
            "splits": {name: entry.to_json() for name, entry in self.splits.items()},
            "counts": self.counts.to_json(), "stats": None if self.stats is None else self.stats.to_json(),
            "preprocess": self.preprocess, "errors": self.errors,
            "config_hash": self.config_hash, "input_fingerprint": self.input_fingerprint,
            "ingest": redact(self.ingest), "status": self.status, "warnings": list(self.warnings),
            "duplicates": None if self.duplicates is None else self.duplicates.to_json(), "columns": self.columns,
            "vocabulary": None if self.vocabulary is None else list(self.vocabulary),
            **({"shards": self.shards} if self.shards is not None else {}),
            **({"version": self.version, "versions": list(self.versions)} if self.versions else {}),
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        """The manifest of a `_manifest.json`; KeyError, TypeError or ValueError when a field is missing or wrong."""
        from dltool.shards.codec import TensorSpec  # the shards package imports storage: not at module level

        features = data["features"]
        names = features.get("names")
        return cls(
            name=data["name"], created=data["created"], dltool_version=data["dltool_version"],
            reader=data["reader"], source=data["source"],
            features=TensorSpec.from_json(features), feature_names=None if names is None else tuple(names),
            label=Label.from_json(data["label"]), passthrough=tuple(data["passthrough"]),
            splits={name: SplitEntry.from_json(entry) for name, entry in data["splits"].items()},
            counts=Counts.from_json(data["counts"]),
            stats=None if data["stats"] is None else Stats.from_json(data["stats"]),
            preprocess=data["preprocess"], errors=data["errors"],
            config_hash=data["config_hash"], input_fingerprint=data["input_fingerprint"],
            ingest=data["ingest"], status=data["status"], format_version=int(data["format_version"]),
            warnings=tuple(data.get("warnings", ())),
            duplicates=None if data.get("duplicates") is None else Duplicates.from_json(data["duplicates"]),
            columns=data.get("columns"),
            vocabulary=None if data.get("vocabulary") is None else tuple(data["vocabulary"]),
            shards=data.get("shards"), version=int(data.get("version", 1)), versions=tuple(data.get("versions", ())),
        )  # fmt: skip

    def rows(self, split: str) -> int:
        """Rows of a split; 0 when the dataset has no such split."""
        entry = self.splits.get(split)
        return entry.rows if entry is not None else 0

    @classmethod
    def read(cls, dataset: Location, require_success: bool = True) -> Manifest:
        """The manifest of a complete dataset (of its version N for `DATASET@N`); one clear error when it is
        missing, partial or not dltool's."""
        current = cls._read(dataset, require_success)
        if dataset.version is None or dataset.version == current.version:
            return current
        known = [entry["version"] for entry in current.versions]
        if dataset.version not in known:
            have = f"versions {min(known)} to {max(known)}" if known else f"only version {current.version}"
            raise InputNotFoundError(f"{dataset.uri}: no such version; the dataset has {have} "
                                     "(`dltool inspect DATASET --versions`)")  # fmt: skip
        try:
            return cls.from_json(json.loads(dataset.child(*version_file(dataset.version).split("/")).read_bytes()))
        except FileNotFoundError as e:
            raise InputNotFoundError(f"{dataset.uri}: version {dataset.version} was removed (by `dltool gc`, or a rebuild: --refit)") from e
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputNotFoundError(f"{dataset.uri}: corrupt manifest of version {dataset.version}: {e}") from e

    @classmethod
    def _read(cls, dataset: Location, require_success: bool) -> Manifest:
        if not dataset.exists():
            raise InputNotFoundError(f"{dataset.uri}: dataset not found (run `dltool ingest` first)")
        if require_success and not dataset.child(SUCCESS).exists():
            raise InputNotFoundError(
                f"{dataset.uri}: dataset is incomplete (no {SUCCESS}); an ingest did not finish: rerun `dltool ingest`"
            )
        try:
            data = json.loads(dataset.child(MANIFEST).read_bytes())
        except FileNotFoundError as e:
            raise InputNotFoundError(f"{dataset.uri}: not a dltool dataset (no {MANIFEST})") from e
        except json.JSONDecodeError as e:
            raise InputNotFoundError(f"{dataset.uri}/{MANIFEST}: corrupt manifest: {e}") from e
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise InputNotFoundError(f"{dataset.uri}: not a dltool dataset (manifest format {found!r})")
        if data.get("format_version", 0) > FORMAT_VERSION:
            raise InputNotFoundError(
                f"{dataset.uri}: manifest version {data['format_version']} is newer than this dltool reads "
                f"({FORMAT_VERSION}); upgrade dltool"
            )
        try:
            return cls.from_json(data)
        except KeyError as e:
            raise InputNotFoundError(f"{dataset.uri}/{MANIFEST}: corrupt manifest: no field {e}") from e
        except (TypeError, ValueError, AttributeError) as e:
            raise InputNotFoundError(f"{dataset.uri}/{MANIFEST}: corrupt manifest: {e}") from e

    def write(self, dataset: Location) -> None:
        """Write `_manifest.json` into the (staged) dataset, with every shard's size and hash, and the same
        as this version's manifest (first: `_manifest.json` alone, written last, makes the version current)."""
        data = self.to_json()
        if self.shards is None:
            data["shards"] = shard_checksums(dataset, [f for entry in self.splits.values() for f in entry.files])
        text = json.dumps(data, indent=2, sort_keys=False).encode()
        dataset.fs.create_dir(dataset.child(VERSIONS).path, recursive=True)
        dataset.child(*version_file(self.version).split("/")).write_bytes(text)
        dataset.child(MANIFEST).write_bytes(text)

    def shard_problem(self, dataset: Location, file: str, size: int, digest: str | None = None) -> str | None:
        """What is wrong with a shard found with `size` (and `digest`, when read), or None; None too for a
        dataset written before shards had checksums."""
        want = (self.shards or {}).get(file)
        if want is None:
            return None
        if size != want["size"]:
            return f"{dataset.child(*file.split('/')).uri}: {size} bytes, the manifest says {want['size']}"
        if digest is not None and digest != want["blake2b"]:
            return f"{dataset.child(*file.split('/')).uri}: its content does not match the manifest's checksum"
        return None


def shard_checksums(dataset: Location, files: list[str]) -> dict[str, dict]:
    """{file: {"size", "blake2b"}} for shard files of a dataset, read a few at a time."""
    from concurrent.futures import ThreadPoolExecutor

    def checksum(file: str) -> tuple[str, dict]:
        size, digest = file_digest(dataset.child(*file.split("/")))
        return file, {"size": size, "blake2b": digest}

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pool.map(checksum, sorted(files)))



def manifest_hash(manifest: Manifest) -> str:
    """A digest of what training depends on (tensors, labels, shards, stats, config); runs and checkpoints record it."""
    from dltool.config.loader import config_hash  # the config package imports storage: not at module level

    data = manifest.to_json()
    return config_hash({key: data[key] for key in ("features", "label", "splits", "stats", "config_hash")})


def preprocessing_hash(manifest: Manifest) -> str:
    """A digest of what a model's inputs and outputs mean (tensors, labels, train statistics, ingest config), the
    same for every version of a dataset: a model trained on one version may score or continue on another."""
    from dltool.config.loader import config_hash

    data = manifest.to_json()
    return config_hash({key: data[key] for key in ("features", "label", "stats", "config_hash")})
