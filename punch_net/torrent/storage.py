"""On-disk state of a download: NAME.part (pieces at their offsets), NAME.part.resume
(verified pieces), and the final check + atomic rename into NAME.

Blocking methods are small (one pwrite of 64 KiB lands in the page cache); the whole-file
check and fsync are run in a thread by the caller.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from punch_net.config import atomic_write
from punch_net.torrent.metainfo import Metainfo
from punch_net.torrent.names import check_name
from punch_net.torrent.resume import ResumeError, ResumeRecord, decode_record


class StorageError(Exception):
    """The download directory cannot hold the file (missing, unwritable, disk full)."""


def describe_os_error(action: str, path: Path, exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return f"{action} {path}: disk full (verified progress is kept; free space and restart)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{action} {path}: permission denied"
    return f"{action} {path}: {exc.strerror or exc}"


class WholeHasher:
    """SHA-256 of a download's bytes in order, fed while the download runs (the file's
    contiguous verified prefix), so the final check need not read the file twice."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.offset = 0

    def update(self, data: bytes) -> None:
        self._hash.update(data)
        self.offset += len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class PartFile:
    """NAME.part plus its resume record inside `directory` (the name is checked again here)."""

    def __init__(self, directory: Path, meta: Metainfo) -> None:
        check_name(meta.name)
        self.meta = meta
        self.directory = directory
        self.final = directory / meta.name
        self.part = directory / (meta.name + ".part")
        self.resume_path = directory / (meta.name + ".part.resume")
        self._fd: int | None = None
        self.dirty = False

    def open(self) -> bytearray:
        """Open (creating) the .part file; returns the verified pieces from the resume record."""
        if not self.directory.is_dir():
            raise StorageError(f"download directory {self.directory} does not exist")
        try:
            fd = os.open(self.part, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise StorageError(describe_os_error("cannot create", self.part, exc)) from None
        self._fd = fd
        have = bytearray(self.meta.num_pieces)
        try:
            size = os.fstat(fd).st_size
            data = self.resume_path.read_bytes()
            have = decode_record(data, self.meta).have
            if size < self._covered(have):
                have = bytearray(self.meta.num_pieces)  # .part shorter than the record claims
        except FileNotFoundError:
            pass
        except (ResumeError, OSError):
            have = bytearray(self.meta.num_pieces)
        return have

    def _covered(self, have: bytearray) -> int:
        end = 0
        for i in range(len(have) - 1, -1, -1):
            if have[i]:
                end = i * self.meta.piece_length + self.meta.piece_size(i)
                break
        return end

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise StorageError("part file is not open")
        return self._fd

    def write_piece(self, index: int, data: bytes) -> None:
        off = index * self.meta.piece_length
        try:
            written = os.pwrite(self.fd, data, off)
            while written < len(data):
                written += os.pwrite(self.fd, data[written:], off + written)
        except OSError as exc:
            raise StorageError(describe_os_error("cannot write", self.part, exc)) from None
        self.dirty = True

    def checkpoint(self, have: bytearray) -> None:
        """fsync the data, then record which pieces it holds (blocking: run in a thread)."""
        try:
            if self.dirty:
                self.dirty = False  # before the fsync: a write racing with it marks the file dirty again
                os.fsync(self.fd)
            atomic_write(self.resume_path, ResumeRecord(self.meta.info_hash_hex, have).encode())
        except OSError as exc:
            raise StorageError(describe_os_error("cannot save progress to", self.resume_path, exc)) from None

    def verify_all(self, progress: Callable[[int], None] | None = None) -> list[int]:
        """Re-hash every piece on disk; returns the indexes that do not match (blocking)."""
        return self.verify_range(0, self.meta.num_pieces, progress)

    def verify_range(self, first: int, end: int, progress: Callable[[int], None] | None = None) -> list[int]:
        """Re-hash pieces first..end-1 on disk, reading 4 MiB at a time (blocking)."""
        meta = self.meta
        per_read = max(1, (4 << 20) // meta.piece_length)
        bad: list[int] = []
        try:
            for start in range(first, end, per_read):
                stop = min(end, start + per_read)
                offset = start * meta.piece_length
                size = (stop - 1) * meta.piece_length + meta.piece_size(stop - 1) - offset
                block = os.pread(self.fd, size, offset)
                with memoryview(block) as view:
                    for i in range(start, stop):
                        at = i * meta.piece_length - offset
                        if hashlib.sha256(view[at:at + meta.piece_size(i)]).digest() != meta.pieces[i]:
                            bad.append(i)
                if progress is not None:
                    progress(stop)
        except OSError as exc:
            raise StorageError(describe_os_error("cannot read", self.part, exc)) from None
        return bad

    def hash_prefix(self, hasher: WholeHasher, upto: int) -> None:
        """Feed the file's bytes [hasher.offset, upto) to `hasher` (blocking: a thread).

        Reads and hashes 4 MiB at a time, so the thread gives up and retakes the GIL a
        few times per call, not per piece: it runs beside a busy event loop without
        slowing it or being starved by it."""
        try:
            while hasher.offset < upto:
                chunk = os.pread(self.fd, min(4 << 20, upto - hasher.offset), hasher.offset)
                if not chunk:
                    raise StorageError(f"{self.part} is shorter than expected")
                hasher.update(chunk)
        except OSError as exc:
            raise StorageError(describe_os_error("cannot read", self.part, exc)) from None

    def sync(self) -> None:
        """Cut the file to its length and fsync it (blocking: run it beside the final hashing)."""
        try:
            os.ftruncate(self.fd, self.meta.length)
            os.fsync(self.fd)
        except OSError as exc:
            raise StorageError(describe_os_error("cannot finish", self.final, exc)) from None

    def finish(self) -> None:
        """Rename into place and drop the resume record (blocking). The caller has synced
        the file and verified every piece on disk first."""
        try:
            os.replace(self.part, self.final)
            try:
                self.resume_path.unlink()
            except FileNotFoundError:
                pass
        except OSError as exc:
            raise StorageError(describe_os_error("cannot finish", self.final, exc)) from None

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(4 << 20):
            h.update(chunk)
    return h.hexdigest()


def existing_matches(path: Path, meta: Metainfo) -> bool:
    """Does a file already at `path` hold exactly this content? (blocking)"""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size != meta.length:
            return False
        with path.open("rb") as fh:
            for i in range(meta.num_pieces):
                if hashlib.sha256(fh.read(meta.piece_length)).digest() != meta.pieces[i]:
                    return False
    except OSError:
        return False
    return True
