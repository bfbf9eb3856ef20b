"""On-disk state of a download: NAME.part (pieces at their offsets), NAME.part.resume
(verified pieces, fsynced once a second), NAME.part.log (the index of each verified piece,
appended as it is written), and the atomic rename into NAME.

A piece is hashed once, when it arrives (the caller verifies before `write_piece`). The
log makes each written piece durable against SIGKILL at the cost of one 4-byte write:
the page cache outlives the process, so what was written is on disk for the next run,
which re-hashes just the pieces the log names past the record (they may not have
reached the platter before a power loss). Only a missing or damaged record makes a
resume re-read the whole .part.

Blocking methods are small (one pwrite of 64 KiB lands in the page cache); opening,
the whole-file hash and fsync are run in a thread by the caller.
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
from collections.abc import Callable
from pathlib import Path

from punch_net.config import atomic_write
from punch_net.torrent.metainfo import Metainfo
from punch_net.torrent.names import check_name
from punch_net.torrent.resume import ResumeError, ResumeRecord, decode_record

HASH_READ = 1 << 20  # bytes per pread of hash_prefix, into a buffer reused for the whole download


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

    def update(self, data: bytes | memoryview) -> None:
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
        self.log_path = directory / (meta.name + ".part.log")
        self._fd: int | None = None
        self._log_fd: int | None = None
        self.logged = 0  # bytes in NAME.part.log (4 per verified piece written)
        self.dirty = False
        self._hash_buf: bytearray | None = None  # hash_prefix's read buffer (one thread at a time)
        self.rehashed = 0  # pieces hashed again by open(): the log's tail, or all after an unclean stop

    def open(self) -> bytearray:
        """Open (creating) the .part file and its log; returns the verified pieces: those of
        the resume record, plus those the log names past it that still hash right."""
        if not self.directory.is_dir():
            raise StorageError(f"download directory {self.directory} does not exist")
        nofollow = getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.part, os.O_RDWR | os.O_CREAT | nofollow, 0o644)
            self._fd = fd
            self._log_fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT | os.O_APPEND | nofollow, 0o644)
        except OSError as exc:
            raise StorageError(describe_os_error("cannot create", self.part, exc)) from None
        n = self.meta.num_pieces
        try:
            size = os.fstat(fd).st_size
            log = os.pread(self._log_fd, 64 << 20, 0)
            self.logged = len(log) - len(log) % 4
            if self.logged != len(log):  # a torn last entry: cut it, so appends stay aligned
                os.ftruncate(self._log_fd, self.logged)
        except OSError as exc:
            raise StorageError(describe_os_error("cannot read", self.part, exc)) from None
        have, covered, unclean = bytearray(n), 0, False
        try:
            record = decode_record(self.resume_path.read_bytes(), self.meta)
            if size < self._covered(record.have):
                raise ResumeError(".part is shorter than the record claims")
            have, covered = record.have, record.log
        except FileNotFoundError:
            unclean = size > 0 and not self.logged  # a .part with neither record nor log
        except (ResumeError, OSError):
            unclean = size > 0
        if unclean:  # keep whatever on disk still hashes right: one full read
            self.rehashed = n
            bad = set(self.verify_all())
            return bytearray(0 if i in bad else 1 for i in range(n))
        tail = {i for (i,) in struct.iter_unpack("<I", log[min(covered, self.logged):self.logged])
                if i < n and not have[i]}
        self.rehashed = len(tail)
        bad = set(self.verify_pieces(sorted(tail)))
        for i in tail - bad:
            have[i] = 1
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
            if self._log_fd is not None:  # the piece is verified and in the page cache: log it
                os.write(self._log_fd, struct.pack("<I", index))
                self.logged += 4
        except OSError as exc:
            raise StorageError(describe_os_error("cannot write", self.part, exc)) from None
        self.dirty = True

    def checkpoint(self, have: bytearray, logged: int = 0) -> None:
        """fsync the data, then record which pieces it holds and how much of the log that
        covers (`logged`, read with `have` on the event loop). Blocking: run in a thread."""
        try:
            if self.dirty:
                self.dirty = False  # before the fsync: a write racing with it marks the file dirty again
                os.fsync(self.fd)
            atomic_write(self.resume_path, ResumeRecord(self.meta.info_hash_hex, have, logged).encode())
        except OSError as exc:
            raise StorageError(describe_os_error("cannot save progress to", self.resume_path, exc)) from None

    def verify_pieces(self, indexes: list[int]) -> list[int]:
        """Re-hash the given pieces on disk; returns those that do not match (blocking)."""
        meta = self.meta
        bad = []
        try:
            for i in indexes:
                data = os.pread(self.fd, meta.piece_size(i), i * meta.piece_length)
                if hashlib.sha256(data).digest() != meta.pieces[i]:
                    bad.append(i)
        except OSError as exc:
            raise StorageError(describe_os_error("cannot read", self.part, exc)) from None
        return bad

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

        Reads and hashes HASH_READ at a time, so the thread gives up and retakes the GIL a
        few times per call, not per piece: it runs beside a busy event loop without
        slowing it or being starved by it. The reads go into one buffer kept for the
        download: a fresh multi-MiB bytes per read is an mmap (glibc maps blocks above its
        threshold) whose every page faults in, which cost more than the hash."""
        if self._hash_buf is None:
            self._hash_buf = bytearray(HASH_READ)
        try:
            with memoryview(self._hash_buf) as view:
                while hasher.offset < upto:
                    n = os.preadv(self.fd, [view[:min(HASH_READ, upto - hasher.offset)]], hasher.offset)
                    if not n:
                        raise StorageError(f"{self.part} is shorter than expected")
                    hasher.update(view[:n])
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
            for done in (self.resume_path, self.log_path):
                try:
                    done.unlink()
                except FileNotFoundError:
                    pass
        except OSError as exc:
            raise StorageError(describe_os_error("cannot finish", self.final, exc)) from None

    def close(self) -> None:
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None
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
