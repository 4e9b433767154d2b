"""Model downloads from Hugging Face hubs: resumable, checksum-verified, cancellable, with progress."""

from engine.downloads.files import FileRecord, RemoteFile
from engine.downloads.hub import HfDownloader

__all__ = ["FileRecord", "HfDownloader", "RemoteFile"]
