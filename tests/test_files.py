"""Saving and loading: round trips, every refusal, hostile files, writers killed mid-save.

The first part checks each kind of file and each refusal once. The second
tries hard: every truncation of a saved model, random corruption anywhere in
it (hypothesis), headers far beyond any real one, sizes that announce
terabytes (with the memory load actually used measured), and a writer process
killed by SIGKILL at random moments of a stream of saves. The property is
always the same: ``load`` returns the model that was saved, whole, or raises
ValueError saying the file is not a (readable) cmlp model -- nothing else.
"""
import io
import os
import pickle
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


# ---------------------------------------------------------------------------
# Each kind of file and each refusal once
# ---------------------------------------------------------------------------


def trained_net(dtype=np.float64):
    rng = np.random.default_rng(0)
    net = cmlp.MLP([4, 6, 5, 3], activation=["relu", "tanh", "softmax"], dtype=dtype, seed=0)
    net.fit(rng.normal(size=(20, 4)), rng.integers(0, 3, 20), epochs=2, loss="cross_entropy")
    return net


def test_save_load_round_trip_bit_exactly(tmp_path, dtype):
    net = trained_net(dtype)
    path = tmp_path / "model.npz"
    net.save(path)
    loaded = cmlp.load(path)
    assert repr(loaded) == repr(net) and loaded.dtype == net.dtype
    np.testing.assert_array_equal(loaded.params, net.params)
    X = np.random.default_rng(1).normal(size=(7, 4))
    np.testing.assert_array_equal(loaded.predict(X), net.predict(X))


def test_the_path_is_used_as_given_and_file_objects_work(tmp_path):
    net = trained_net()
    net.save(str(tmp_path / "model"))
    assert os.listdir(tmp_path) == ["model"]
    np.testing.assert_array_equal(cmlp.load(tmp_path / "model").params, net.params)
    buffer = io.BytesIO()
    net.save(buffer)
    buffer.seek(0)
    np.testing.assert_array_equal(cmlp.load(buffer).params, net.params)


def test_the_file_is_a_plain_npz_that_numpy_reads_without_pickle(tmp_path):
    net = trained_net()
    net.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as data:
        assert sorted(data.files) == ["activation", "format", "format_version", "layer_sizes",
                                      "params"]
        assert str(data["format"]) == "cmlp" and int(data["format_version"]) == 1
        assert data["layer_sizes"].tolist() == [4, 6, 5, 3]
        assert data["activation"].tolist() == ["relu", "tanh", "softmax"]
        np.testing.assert_array_equal(data["params"], net.params)


def test_save_replaces_atomically_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    old = cmlp.MLP([2, 3], seed=1)
    old.save(path)
    original = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("crash mid-save")

    monkeypatch.setattr(np.lib.format, "write_array", crash)
    with pytest.raises(KeyboardInterrupt):
        cmlp.MLP([2, 3], seed=2).save(path)
    assert path.read_bytes() == original
    assert os.listdir(tmp_path) == ["m.npz"]
    monkeypatch.undo()
    new = cmlp.MLP([2, 3], seed=2)
    new.save(path)
    np.testing.assert_array_equal(cmlp.load(path).params, new.params)
    assert os.listdir(tmp_path) == ["m.npz"]


@pytest.mark.spawns_python
def test_a_killed_writer_leaves_the_old_file_whole(tmp_path):
    path = tmp_path / "m.npz"
    cmlp.MLP([2, 3], seed=1).save(path)
    original = path.read_bytes()
    # A writer killed while it writes a large model: the old file stays as it was.
    script = ("import os, signal, numpy as np, cmlp\n"
              "real = np.lib.format.write_array\n"
              "def write_then_die(*a, **k):\n"
              "    real(*a, **k)\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n"
              "np.lib.format.write_array = write_then_die\n"
              f"cmlp.MLP([300, 300, 2], seed=3).save({str(path)!r})\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path)
    assert result.returncode != 0
    assert path.read_bytes() == original
    np.testing.assert_array_equal(cmlp.load(path).params, cmlp.MLP([2, 3], seed=1).params)


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def good_members(net):
    return dict(format=np.array("cmlp"), format_version=np.array(1),
                layer_sizes=np.array(net.layer_sizes), activation=np.array(net.activation),
                params=net.params)


def test_truncated_files_are_refused(tmp_path):
    net = trained_net()
    net.save(tmp_path / "m.npz")
    data = (tmp_path / "m.npz").read_bytes()
    for cut in (0, 10, len(data) // 3, len(data) // 2, len(data) - 30, len(data) - 1):
        (tmp_path / "cut.npz").write_bytes(data[:cut])
        with pytest.raises(ValueError, match="cmlp model file"):
            cmlp.load(tmp_path / "cut.npz")


def test_corrupted_parameters_are_refused(tmp_path):
    net = trained_net()
    net.save(tmp_path / "m.npz")
    data = bytearray((tmp_path / "m.npz").read_bytes())
    position = bytes(data).index(net.params[:4].tobytes())  # inside the params member
    data[position + 3] ^= 0xFF
    (tmp_path / "bad.npz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted"):
        cmlp.load(tmp_path / "bad.npz")


@pytest.mark.parametrize("change, message", [
    (dict(format=np.array("keras")), "format is 'keras'"),
    (dict(format_version=np.array(2)), "format version 2"),
    (dict(layer_sizes=np.array([4, 0, 3])), "widths"),
    (dict(activation=np.array(["relu", "gelu"])), "activation"),
    (dict(activation=np.array(["relu"])), "shape"),
    (dict(params=np.zeros(3)), "shape"),
    (dict(params=np.zeros(3 * 2 + 2 * 2 * 1 + 2, dtype=np.int64)), "dtype"),
    (dict(params=np.array([None, 1.0], dtype=object)), "never unpickled"),
    (dict(activation=np.array([{"a": 1}, "x"], dtype=object)), "never unpickled"),
])
def test_foreign_and_hostile_members_are_refused(tmp_path, change, message):
    net = cmlp.MLP([3, 2, 2], activation=["relu", "identity"])
    members = good_members(net)
    members.update(change)
    path = write_npz(tmp_path / "x.npz", **members)
    with pytest.raises(ValueError, match=message):
        cmlp.load(path)


def test_a_pickle_inside_an_npz_is_never_executed(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "owned"),))

    net = cmlp.MLP([3, 2])
    members = good_members(net)
    members["params"] = np.array([Boom()], dtype=object)
    path = write_npz(tmp_path / "evil.npz", **members)
    with pytest.raises(ValueError, match="never unpickled"):
        cmlp.load(path)
    assert not (tmp_path / "owned").exists()


def test_absurd_shapes_are_refused_before_allocating(tmp_path):
    # Headers announcing terabytes, in a file of a few hundred bytes.
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in good_members(cmlp.MLP([3, 2])).items():
            if name not in ("layer_sizes", "params"):
                buffer = io.BytesIO()
                np.save(buffer, array)
                archive.writestr(name + ".npy", buffer.getvalue())
        buffer = io.BytesIO()
        np.save(buffer, np.array([10**6, 10**6]))
        archive.writestr("layer_sizes.npy", buffer.getvalue())
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f8", "fortran_order": False, "shape": (10**12 + 10**6,)})
        archive.writestr("params.npy", header.getvalue() + b"\0" * 64)
    with pytest.raises(ValueError, match="announces|claims|truncated"):
        cmlp.load(path)


@pytest.mark.parametrize("content", [b"", b"not a zip at all", pickle.dumps({"a": 1}),
                                     b"PK\x03\x04" + b"\0" * 100])
def test_non_archives_are_refused(tmp_path, content):
    (tmp_path / "f.npz").write_bytes(content)
    with pytest.raises(ValueError, match="not a readable cmlp model file"):
        cmlp.load(tmp_path / "f.npz")


def test_an_npz_of_something_else_is_refused(tmp_path):
    path = write_npz(tmp_path / "other.npz", x=np.arange(3))
    with pytest.raises(ValueError, match="not a saved network"):
        cmlp.load(path)


def test_missing_files_raise_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        cmlp.load(tmp_path / "nothing.npz")


def test_a_newer_format_is_named_even_when_its_members_differ(tmp_path):
    path = write_npz(tmp_path / "future.npz", format=np.array("cmlp"),
                     format_version=np.array(7), weights=np.zeros(3))
    with pytest.raises(ValueError, match="format version 7.*upgrade cmlp"):
        cmlp.load(path)


def test_a_missing_member_is_named(tmp_path):
    members = good_members(cmlp.MLP([3, 2]))
    del members["activation"]
    with pytest.raises(ValueError, match="'activation' member is missing"):
        cmlp.load(write_npz(tmp_path / "m.npz", **members))


# ---------------------------------------------------------------------------
# Hostile files, tried hard
# ---------------------------------------------------------------------------

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


@pytest.mark.slow
@pytest.mark.spawns_python
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
    # ...which the next save to that path removes (an empty one, a killed save's
    # that never wrote, only once it is a minute old: a live save may be about to lock it).
    cmlp.MLP([2, 3, 1]).save(path)
    left = [p for p in tmp_path.iterdir() if p.name not in ("model.npz", "ready")]
    assert all(p.stat().st_size == 0 for p in left), [p.name for p in left]
