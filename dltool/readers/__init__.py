"""Record readers, registered under the YAML `reader:` name.

The import order is the registration order: the order of the readers in `dltool schema`
and in the config reference.
"""

from dltool.readers.base import REGISTRY, FileReader, Reader, TableReader, reader_for, register  # isort: skip
from dltool.readers.image import ImageReader, ImageReaderConfig  # isort: skip
from dltool.readers.audio import AudioReader, AudioReaderConfig  # isort: skip
from dltool.readers.csv import CsvReader, CsvReaderConfig  # isort: skip
from dltool.readers.table import TableReaderConfig, TableSourceReader  # isort: skip
from dltool.readers.text import TextReader, TextReaderConfig  # isort: skip

__all__ = [
    "REGISTRY",
    "AudioReader",
    "AudioReaderConfig",
    "CsvReader",
    "CsvReaderConfig",
    "FileReader",
    "ImageReader",
    "ImageReaderConfig",
    "Reader",
    "TableReader",
    "TableReaderConfig",
    "TableSourceReader",
    "TextReader",
    "TextReaderConfig",
    "reader_for",
    "register",
]
