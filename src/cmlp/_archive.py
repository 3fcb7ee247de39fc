"""The file format of a saved network: writing it atomically, reading it safely.

A saved network is one ``.npz`` archive (NumPy's zip of ``.npy`` arrays, left
uncompressed) with five members: ``format`` (the string ``"cmlp"``),
``format_version``, ``layer_sizes``, ``activation`` and ``params`` (the flat
parameter buffer, in the network's dtype). :func:`save` writes it atomically;
:func:`read` reads it without ever unpickling, checks every header before it
allocates anything, and turns a truncated, corrupted or foreign file into a
``ValueError`` that says so. This module knows arrays, not networks:
:func:`cmlp.io.load` builds the :class:`cmlp.MLP`.
"""
import hashlib
import os
import secrets
import stat
import time
import zipfile
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

if TYPE_CHECKING:
    from cmlp.network import MLP

try:
    import fcntl
except ImportError:  # Windows: an open file cannot be removed there, which serves instead
    fcntl = None

FORMAT_NAME = "cmlp"
#: the version :func:`save` writes and the newest :func:`load` reads
FORMAT_VERSION = 1
# Sanity bounds for the small members; the params member is bounded by the
# file's own size (members are stored uncompressed).
_MAX_LAYERS = 10_000
_MAX_NAME_LENGTH = 64
_MAX_HEADER = 10_000  # bytes of a .npy header, NumPy's own default limit


# ---------------------------------------------------------------------------
# save
# ---------------------------------------------------------------------------

def save(net: "MLP", path: str | bytes | os.PathLike | BinaryIO) -> None:
    """Write ``net`` to ``path`` as a ``.npz`` archive, atomically.

    The archive is written to a temporary file in the same directory, flushed
    to disk, and renamed over ``path`` in one step: a crash at any moment
    leaves either the old file or the new one, whole. ``path`` (str, bytes or
    os.PathLike) is used as given (no ``.npz`` is appended). A symbolic link
    is written through: the file it points to is replaced, and the link stays
    (as ``numpy.save`` and editors do). A writable binary file object
    also works (then without the atomic rename).

    The temporary file is named ``.<name>.<16 random hex digits>.tmp``, or
    ``.cmlp-<hash of the name>-<random>.tmp`` where that would be longer than
    the file system allows. While it is written the saving process holds a
    lock on it (POSIX ``flock``; on Windows, it is open); one left behind by
    a killed save holds none, and the next save to the same path removes it.
    """
    # One snapshot of the model: a save taken while another thread trains sees
    # the parameters between two steps, and architecture and parameters agree.
    sizes, activation, params = net._snapshot()
    arrays = {
        "format": np.array(FORMAT_NAME),
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "layer_sizes": np.array(sizes, dtype=np.int64),
        "activation": np.array(activation),
        "params": params,
    }
    if hasattr(path, "write"):
        _write_archive(path, arrays)
        return
    path = os.path.realpath(os.fsdecode(os.fspath(path)))
    directory, name = os.path.split(path)
    prefix = _temporary_prefix(directory, name)
    _remove_stale_temporaries(directory, prefix)
    token = secrets.token_hex(_TOKEN_LENGTH // 2)
    temporary = os.path.join(directory, f"{prefix}{token}{_TEMPORARY_SUFFIX}")
    # os.open with 0o666 lets the umask decide the mode, as for any new file.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            _lock(file.fileno())   # held until closed: this save is alive
            _write_archive(file, arrays)
            file.flush()
            os.fsync(file.fileno())
            if _REPLACE_WHILE_OPEN:
                os.replace(temporary, path)
        if not _REPLACE_WHILE_OPEN:
            os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


# POSIX renames the file while its lock is still held, so that no other save
# can take it for stale; Windows cannot rename a file that is open.
_REPLACE_WHILE_OPEN = fcntl is not None


_TOKEN_LENGTH = 16   # hex digits of the random part of a temporary name
_EMPTY_TEMPORARY_AGE = 60   # seconds: by then a live save has locked and written its file
_TEMPORARY_SUFFIX = ".tmp"


def _temporary_prefix(directory, name):
    """What the temporary files of saves to ``name`` start with: ``.<name>.``, or,
    where that would make too long a name, ``.cmlp-<hash of the name>-``."""
    prefix = f".{name}."
    longest = len(os.fsencode(prefix)) + _TOKEN_LENGTH + len(_TEMPORARY_SUFFIX)
    if longest <= _name_max(directory):
        return prefix
    return f".cmlp-{hashlib.sha256(os.fsencode(name)).hexdigest()[:16]}-"


def _name_max(directory):
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):   # no pathconf (Windows), or no answer
        return 255


def _is_temporary(entry, prefix):
    """Whether a directory entry is a temporary file of a save with this prefix."""
    token = entry[len(prefix):-len(_TEMPORARY_SUFFIX)]
    return (entry.startswith(prefix) and entry.endswith(_TEMPORARY_SUFFIX)
            and len(token) == _TOKEN_LENGTH and all(c in "0123456789abcdef" for c in token))


def _lock(fd):
    """An exclusive lock on an open file, if the platform has them (True if taken)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _remove_stale_temporaries(directory, prefix):
    """Remove the temporary files that killed saves to this path left behind.

    A save in progress holds a lock on its file (POSIX) or keeps it open
    (Windows, where an open file cannot be removed): only the files of saves
    that are gone are removed. An empty file may be one that a live save has
    just created and not yet locked: it is removed only once it is older
    than a minute.
    """
    try:
        names = [entry for entry in os.listdir(directory) if _is_temporary(entry, prefix)]
    except OSError:
        return
    for entry in names:
        stale = os.path.join(directory, entry)
        try:
            fd = os.open(stale, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            continue
        try:
            info = os.fstat(fd)
            settled = info.st_size > 0 or time.time() - info.st_mtime > _EMPTY_TEMPORARY_AGE
            if stat.S_ISREG(info.st_mode) and settled and _lock(fd):
                os.unlink(stale)
        except OSError:
            pass
        finally:
            os.close(fd)


def _write_archive(file, arrays):
    """The ``.npz`` layout of :func:`numpy.savez` (stored, not compressed), never pickling."""
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def _fsync_directory(directory):
    """Make the rename itself durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------

def read(path):
    """``(layer_sizes, activation, params)`` of the network saved at ``path``; see :func:`cmlp.io.load`."""
    name = getattr(path, "name", path) if hasattr(path, "read") else os.fspath(path)
    file = path if hasattr(path, "read") else _open_regular_file(path)
    try:
        try:
            size = file.seek(0, os.SEEK_END)
            file.seek(0)
        except OSError as error:
            raise ValueError(f"{name!r} cannot be read as a cmlp model file: it is not "
                             f"seekable ({error})") from None
        try:
            with zipfile.ZipFile(file) as archive:
                return _read_parts(archive, size)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, KeyError,
                SyntaxError, NotImplementedError, ValueError, TypeError,
                RuntimeError) as error:   # zipfile raises RuntimeError for encrypted members
            raise ValueError(f"{name!r} is not a readable cmlp model file: it is truncated, "
                             f"corrupted or not an .npz archive ({error})") from None
        except _FormatError as error:
            raise ValueError(f"{name!r} is not a cmlp model file: {error}") from None
    finally:
        if file is not path:
            file.close()


def _open_regular_file(path):
    """``path`` opened for reading, or ValueError unless it is a regular file.

    Opened without blocking, then checked: a FIFO would block open() forever,
    and a device such as /dev/zero would be read without end.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(f"{os.fspath(path)!r} is a directory")
        if not stat.S_ISREG(mode):
            raise ValueError(f"{os.fspath(path)!r} is not a regular file, so not a cmlp model "
                             "file (a FIFO, a device or a directory is never read)")
        if fcntl is not None and hasattr(os, "O_NONBLOCK"):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class _FormatError(Exception):
    """A member is missing or is not what a cmlp file holds."""


def _read_parts(archive, size):
    members = {info.filename[:-len(".npy")]: info for info in archive.infolist()
               if info.filename.endswith(".npy")}
    if "format" not in members:
        raise _FormatError(f"it holds {sorted(members)}, not a saved network "
                           "(expected format, format_version, layer_sizes, activation, params)")
    fmt = _read_member(archive, members, "format", "U", (), size)
    if str(fmt) != FORMAT_NAME:
        raise _FormatError(f"its format is {str(fmt)!r}, not {FORMAT_NAME!r}")
    version = int(_read_member(archive, members, "format_version", "iu", (), size))
    if version > FORMAT_VERSION or version < 1:
        raise _FormatError(f"format version {version}; this cmlp reads versions up to "
                           f"{FORMAT_VERSION} (a newer cmlp wrote it: upgrade cmlp)")
    sizes = _read_member(archive, members, "layer_sizes", "iu", None, size)
    if sizes.ndim != 1 or not 2 <= sizes.shape[0] <= _MAX_LAYERS or sizes.min() < 1:
        raise _FormatError(f"layer_sizes {sizes.tolist()[:10]} is not a list of widths >= 1")
    sizes = [int(s) for s in sizes]
    activation = _read_member(archive, members, "activation", "U", (len(sizes) - 1,), size)
    n_params = sum((n_in + 1) * n_out for n_in, n_out in zip(sizes, sizes[1:]))
    params = _read_member(archive, members, "params", "f", (n_params,), size)
    if params.dtype.itemsize not in (4, 8):
        raise _FormatError(f"params must be float32 or float64, got {params.dtype}")
    return sizes, [str(a) for a in activation], params


def _check_header_length(file, key, length_bytes):
    """Refuse a header longer than NumPy's own limit before anything parses it.

    NumPy >= 1.24 refuses them itself; older NumPy would evaluate a header of
    any length, so the check is ours.
    """
    start = file.tell()
    length = int.from_bytes(file.read(length_bytes), "little")
    if length > _MAX_HEADER:
        raise _FormatError(f"the {key!r} member has a {length}-byte header; "
                           f".npy headers are at most {_MAX_HEADER}")
    file.seek(start)


def _read_member(archive, members, key, kinds, shape, archive_size):
    """One ``.npy`` member, checked against ``kinds`` and ``shape`` before its data is read."""
    if key not in members:
        raise _FormatError(f"the {key!r} member is missing")
    info = members[key]
    if info.flag_bits & 0x1:
        raise _FormatError(f"the {key!r} member is encrypted; cmlp never writes encrypted files")
    if info.compress_type != zipfile.ZIP_STORED:
        raise _FormatError(f"the {key!r} member is compressed; cmlp writes them uncompressed")
    if info.file_size > archive_size:
        raise _FormatError(f"the {key!r} member claims {info.file_size} bytes, more than the file")
    with archive.open(info) as file:
        major, minor = np.lib.format.read_magic(file)
        _check_header_length(file, key, 2 if (major, minor) == (1, 0) else 4)
        if (major, minor) == (1, 0):
            found_shape, fortran, dtype = np.lib.format.read_array_header_1_0(file)
        elif (major, minor) == (2, 0):
            found_shape, fortran, dtype = np.lib.format.read_array_header_2_0(file)
        else:
            raise _FormatError(f"the {key!r} member has .npy version {major}.{minor}")
        if dtype.hasobject or dtype.kind not in kinds:
            raise _FormatError(f"the {key!r} member has dtype {dtype}, not one cmlp writes "
                               "(Python objects are never unpickled)")
        if kinds == "U" and dtype.itemsize > 4 * _MAX_NAME_LENGTH:
            raise _FormatError(f"the {key!r} member holds strings of {dtype}")
        if shape is not None and found_shape != shape:
            raise _FormatError(f"the {key!r} member has shape {found_shape}, expected {shape}")
        if fortran and len(found_shape) > 1:
            raise _FormatError(f"the {key!r} member is in Fortran order")
        count = int(np.prod(found_shape, dtype=object))
        if shape is None and count > _MAX_LAYERS:
            raise _FormatError(f"the {key!r} member holds {count} values")
        nbytes = count * dtype.itemsize
        if file.tell() + nbytes != info.file_size:
            raise _FormatError(f"the {key!r} member is {info.file_size} bytes, but its header "
                               f"announces {file.tell() + nbytes}: truncated or corrupted")
        data = file.read(nbytes)
        if len(data) != nbytes:
            raise _FormatError(f"the {key!r} member is truncated")
    return np.frombuffer(data, dtype=dtype).reshape(found_shape)
