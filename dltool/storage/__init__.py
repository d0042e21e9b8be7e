"""Storage: URIs to pyarrow filesystems, atomic commits, dataset manifests."""

from dltool.storage.fs import Location, list_files, open_location
from dltool.storage.manifest import MANIFEST, SUCCESS, read_manifest

__all__ = ["MANIFEST", "SUCCESS", "Location", "list_files", "open_location", "read_manifest"]
