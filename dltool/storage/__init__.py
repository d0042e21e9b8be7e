"""Storage: URIs to pyarrow filesystems, atomic commits, dataset manifests."""

from dltool.storage.fs import Location, list_files, open_location
from dltool.storage.manifest import MANIFEST, SUCCESS, Manifest

__all__ = ["MANIFEST", "SUCCESS", "Location", "Manifest", "list_files", "open_location"]
