"""Record readers, registered under the YAML `reader:` name."""

from dltool.readers.audio import AudioReader
from dltool.readers.base import REGISTRY, FileReader, TableReader, reader_for
from dltool.readers.csv import CsvReader
from dltool.readers.image import ImageReader

__all__ = ["REGISTRY", "AudioReader", "CsvReader", "FileReader", "ImageReader", "TableReader", "reader_for"]
