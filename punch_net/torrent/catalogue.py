"""The share directory index: metainfo for every regular file directly inside DIR,
cached by (size, mtime, inode) so a restart does not re-hash unchanged files.

Only plain files in DIR itself are shared: symlinks, sub-directories, hidden files and
our own `.part`/`.part.resume`/`.part.log` files are skipped, and files are opened with O_NOFOLLOW.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from punch_net.config import atomic_write
from punch_net.torrent.metainfo import Metainfo, MetainfoError, decode, hash_file
from punch_net.torrent.names import UnsafeName, check_name

CACHE_VERSION = 1


@dataclass(frozen=True)
class FileStamp:
    size: int
    mtime_ns: int
    ino: int


@dataclass(frozen=True)
class SharedFile:
    path: Path
    stamp: FileStamp
    meta: Metainfo


def shareable(entry: os.DirEntry[str]) -> bool:
    name = entry.name
    if name.startswith(".") or name.endswith((".part", ".part.resume", ".part.log")):
        return False
    try:
        check_name(name)
    except UnsafeName:
        return False
    try:
        return entry.is_file(follow_symlinks=False)
    except OSError:
        return False


def list_candidates(share_dir: Path) -> dict[str, FileStamp]:
    """name -> stamp of every shareable file (blocking)."""
    out: dict[str, FileStamp] = {}
    with os.scandir(share_dir) as it:
        for entry in it:
            if not shareable(entry):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            out[entry.name] = FileStamp(st.st_size, st.st_mtime_ns, st.st_ino)
    return out


class ShareIndex:
    """Keeps `files` in step with the directory; call `rescan` (blocking) periodically."""

    def __init__(self, share_dir: Path, cache_path: Path | None) -> None:
        self.share_dir = share_dir
        self.cache_path = cache_path
        self.files: dict[str, SharedFile] = {}
        self._cache: dict[str, tuple[FileStamp, Metainfo]] = self._load_cache()

    def _load_cache(self) -> dict[str, tuple[FileStamp, Metainfo]]:
        if self.cache_path is None:
            return {}
        try:
            obj = json.loads(self.cache_path.read_bytes())
            if obj.get("version") != CACHE_VERSION or obj.get("dir") != str(self.share_dir.resolve()):
                return {}
            out = {}
            for name, item in obj["files"].items():
                stamp = FileStamp(int(item["size"]), int(item["mtime_ns"]), int(item["ino"]))
                meta = decode(base64.b64decode(item["metainfo"]))
                if meta.name == name and meta.length == stamp.size:
                    out[name] = (stamp, meta)
            return out
        except (OSError, ValueError, KeyError, TypeError, AttributeError, MetainfoError):
            return {}

    def _save_cache(self) -> None:
        if self.cache_path is None:
            return
        obj = {
            "version": CACHE_VERSION,
            "dir": str(self.share_dir.resolve()),
            "files": {
                name: {"size": f.stamp.size, "mtime_ns": f.stamp.mtime_ns, "ino": f.stamp.ino,
                       "metainfo": base64.b64encode(f.meta.encode()).decode()}
                for name, f in self.files.items()
            },
        }
        try:
            atomic_write(self.cache_path, json.dumps(obj).encode())
        except OSError:
            pass  # the cache only saves time

    def rescan(self, progress: Callable[[str, int, int], None] | None = None,
               on_added: Callable[[SharedFile], None] | None = None) -> tuple[list[SharedFile], list[str]]:
        """Hash new or changed files (blocking). Returns (added or changed, removed names)."""
        current = list_candidates(self.share_dir)
        removed = [name for name in self.files if name not in current]
        for name in removed:
            del self.files[name]
        added: list[SharedFile] = []
        for name, stamp in sorted(current.items()):
            known = self.files.get(name)
            if known is not None and known.stamp == stamp:
                continue
            cached = self._cache.get(name)
            if cached is not None and cached[0] == stamp:
                meta = cached[1]
            else:
                def file_progress(done: int, total: int, name: str = name) -> None:
                    if progress is not None:
                        progress(name, done, total)

                try:
                    meta = hash_file(self.share_dir / name, name, file_progress)
                except (OSError, MetainfoError):
                    continue  # vanished, unreadable or changed while hashing: next scan
                try:
                    st = os.stat(self.share_dir / name, follow_symlinks=False)
                except OSError:
                    continue
                if FileStamp(st.st_size, st.st_mtime_ns, st.st_ino) != stamp:
                    continue  # modified while hashing: next scan
            shared = SharedFile(self.share_dir / name, stamp, meta)
            self.files[name] = shared
            self._cache[name] = (stamp, meta)
            added.append(shared)
            if on_added is not None:
                on_added(shared)
        if added or removed:
            self._save_cache()
        return added, removed
