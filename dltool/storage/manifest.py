"""The dataset manifest: versioned JSON that describes shards, and the commit markers."""

from __future__ import annotations

import json

from dltool.errors import InputNotFoundError
from dltool.storage.fs import Location

MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"
FORMAT = "dltool-dataset"
FORMAT_VERSION = 1


def write_manifest(dataset: Location, manifest: dict) -> None:
    dataset.child(MANIFEST).write_bytes(json.dumps(manifest, indent=2, sort_keys=False).encode())


def read_manifest(dataset: Location, require_success: bool = True) -> dict:
    """The manifest of a complete dataset; one clear error when it is missing or partial."""
    if not dataset.exists():
        raise InputNotFoundError(f"{dataset.uri}: dataset not found (run `dltool ingest` first)")
    if require_success and not dataset.child(SUCCESS).exists():
        raise InputNotFoundError(
            f"{dataset.uri}: dataset is incomplete (no {SUCCESS}); an ingest did not finish: rerun `dltool ingest`"
        )
    try:
        manifest = json.loads(dataset.child(MANIFEST).read_bytes())
    except FileNotFoundError as e:
        raise InputNotFoundError(f"{dataset.uri}: not a dltool dataset (no {MANIFEST})") from e
    except json.JSONDecodeError as e:
        raise InputNotFoundError(f"{dataset.uri}/{MANIFEST}: corrupt manifest: {e}") from e
    if manifest.get("format") != FORMAT:
        raise InputNotFoundError(f"{dataset.uri}: not a dltool dataset (manifest format {manifest.get('format')!r})")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise InputNotFoundError(
            f"{dataset.uri}: manifest version {manifest['format_version']} is newer than this dltool reads "
            f"({FORMAT_VERSION}); upgrade dltool"
        )
    return manifest
