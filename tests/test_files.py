"""Hostile files for cmlp.load, and save under a writer killed at random moments.

tests/test_io.py checks each kind of bad file once; this module tries hard:
every truncation of a saved model, random corruption anywhere in it
(hypothesis), headers far beyond any real one, sizes that announce terabytes
(with the memory load actually used measured), and a writer process killed
by SIGKILL at random moments of a stream of saves. The property is always the
same: ``load`` returns the model that was saved, whole, or raises ValueError
saying the file is not a (readable) cmlp model -- nothing else.
"""
import io
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import given, strategies as st

import cmlp


def saved_bytes(net):
    buffer = io.BytesIO()
    net.save(buffer)
    return buffer.getvalue()


SMALL = cmlp.MLP([3, 4, 2], activation=["tanh", "softmax"], seed=0)
SMALL_FILE = saved_bytes(SMALL)


def load_bytes(data):
    return cmlp.load(io.BytesIO(bytes(data)))


def assert_same_model(loaded, net):
    assert repr(loaded) == repr(net)
    np.testing.assert_array_equal(loaded.params, net.params)


def test_every_truncation_is_refused():
    for cut in range(len(SMALL_FILE)):
        with pytest.raises(ValueError, match="cmlp model file"):
            load_bytes(SMALL_FILE[:cut])


@given(st.lists(st.tuples(st.integers(0, len(SMALL_FILE) - 1), st.integers(1, 255)),
                min_size=1, max_size=4))
def test_corruption_anywhere_is_refused_or_harmless(flips):
    # A changed byte in the data is caught by the zip's CRC-32, in a header by
    # the checks on every member; only bytes nothing reads (timestamps, the
    # zip's "extra" fields) may change and still give the same model.
    data = bytearray(SMALL_FILE)
    for position, mask in flips:
        data[position] ^= mask
    assert_refused_or_harmless(data)


@given(st.integers(0, len(SMALL_FILE)), st.binary(min_size=1, max_size=64),
       st.booleans())
def test_inserted_or_overwritten_bytes_are_refused_or_harmless(position, junk, insert):
    data = bytearray(SMALL_FILE)
    if insert:
        data[position:position] = junk
    else:
        data[position:position + len(junk)] = junk
    assert_refused_or_harmless(data)


def assert_refused_or_harmless(data):
    """A damaged file is refused with cmlp's own message, or loads as the original."""
    try:
        loaded = load_bytes(data)
    except ValueError as error:
        assert "cmlp model file" in str(error)
        return
    assert_same_model(loaded, SMALL)


def npy_member(header_text, payload=b"", version=(1, 0)):
    """A .npy member with a header written by hand (any length, any content)."""
    magic = b"\x93NUMPY" + bytes(version)
    header = header_text.encode("latin1")
    size_format = "<H" if version == (1, 0) else "<I"
    pad = -(len(magic) + struct.calcsize(size_format) + len(header) + 1) % 64
    header += b" " * pad + b"\n"
    return magic + struct.pack(size_format, len(header)) + header + payload


def archive_with(**members):
    """An .npz of SMALL's members, with some replaced by raw .npy bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(SMALL_FILE)) as original, \
            zipfile.ZipFile(buffer, "w") as archive:
        for name in original.namelist():
            key = name[:-len(".npy")]
            archive.writestr(name, members.pop(key, None) or original.read(name))
        for key, raw in members.items():
            archive.writestr(key + ".npy", raw)
    return buffer.getvalue()


@pytest.mark.parametrize("version,length", [((1, 0), 60_000), ((2, 0), 200_000),
                                            ((2, 0), 50_000_000)])
def test_oversized_headers_are_refused(version, length):
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (26,), " + " " * length + "}"
    data = archive_with(params=npy_member(header, b"\0" * 26 * 8, version))
    with pytest.raises(ValueError, match="cmlp model file"):
        load_bytes(data)


@pytest.mark.parametrize("header", [
    "{'descr': '<f8', 'fortran_order': False, 'shape': (10**15,), }",  # not a literal
    "{'descr': '<f8', 'fortran_order': False, 'shape': (999999999999,), }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (2**62, 4), }",
    "{'descr': [('x', 'O')], 'fortran_order': False, 'shape': (26,), }",
    "{'descr': '|V8', 'fortran_order': False, 'shape': (26,), }",
    "{'descr': '<c16', 'fortran_order': False, 'shape': (26,), }",
    "{'descr': '<f8', 'fortran_order': True, 'shape': (26,), 'extra': __import__('os')}",
    "__import__('os').system('echo owned')",
    "{'descr': '<f8'}",
    "[1, 2, 3]",
])
def test_hostile_headers_are_refused(header):
    with pytest.raises(ValueError, match="cmlp model file"):
        load_bytes(archive_with(params=npy_member(header, b"\0" * 26 * 8)))


@pytest.mark.parametrize("sizes", [[10**6, 10**6], [2**40, 2], [1, 2**62], [3] * 10_001,
                                   [2**63 - 1, 2**63 - 1]])
def test_sizes_announcing_terabytes_allocate_nothing(sizes):
    n_params = sum((a + 1) * b for a, b in zip(sizes, sizes[1:]))
    buffer = io.BytesIO()
    np.save(buffer, np.array(sizes, dtype=np.uint64))
    activation = io.BytesIO()
    np.save(activation, np.array(["tanh"] * (len(sizes) - 1)))
    header = f"{{'descr': '<f8', 'fortran_order': False, 'shape': ({n_params},), }}"
    data = archive_with(layer_sizes=buffer.getvalue(), activation=activation.getvalue(),
                        params=npy_member(header, b"\0" * 64))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="cmlp model file"):
            load_bytes(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"{peak} bytes allocated to refuse a {len(data)}-byte file"


def test_a_member_claiming_more_than_the_file_is_refused():
    # The central directory says params.npy is 4 GB long (stored, uncompressed).
    data = bytearray(SMALL_FILE)
    entry = data.index(b"PK\x01\x02")
    while data[entry + 46:entry + 56] != b"params.npy":
        entry = data.index(b"PK\x01\x02", entry + 1)
    data[entry + 20:entry + 28] = struct.pack("<II", 2**32 - 1, 2**32 - 1)  # both sizes
    with pytest.raises(ValueError, match="cmlp model file"):
        load_bytes(data)


WRITER = textwrap.dedent("""
    import sys, numpy as np, cmlp
    path, ready = sys.argv[1], sys.argv[2]
    nets = [cmlp.MLP([400, 400, 3], seed=s) for s in (1, 2)]
    nets[0].save(path)
    open(ready, "w").close()
    i = 0
    while True:  # until killed: alternate the two models over the same file
        i += 1
        nets[i % 2].save(path)
""")


def test_a_writer_killed_at_random_moments_leaves_a_whole_model(tmp_path):
    path, ready = tmp_path / "model.npz", tmp_path / "ready"
    expected = [cmlp.MLP([400, 400, 3], seed=s).params for s in (1, 2)]
    rng = np.random.default_rng(0)
    for attempt in range(8):
        ready.unlink(missing_ok=True)
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(ready)])
        try:
            deadline = time.monotonic() + 60
            while not ready.exists():
                assert writer.poll() is None and time.monotonic() < deadline, "writer failed"
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.3))  # somewhere inside some save
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait()
        params = cmlp.load(path).params
        assert any(np.array_equal(params, e) for e in expected), f"attempt {attempt}"
    # A killed writer may leave its temporary behind, never a half model at path.
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("model.npz", "ready")]
    assert all(name.startswith(".model.npz.") and name.endswith(".tmp") for name in leftovers)
