"""save/load round trips and refusals; state dicts and models to and from PyTorch."""
import io
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import cmlp
from cmlp.io import from_torch, layer_state_dict


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


# ---------------------------------------------------------------------------
# PyTorch
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("activation", [["sigmoid", "sigmoid"], ["relu", "identity"],
                                        ["tanh", "softmax"], ["identity", "tanh"]])
def test_to_torch_outputs_equal_cmlps(activation, dtype):
    torch = pytest.importorskip("torch")
    net = cmlp.MLP([5, 9, 4], activation=activation, dtype=dtype, seed=2)
    for b in net.biases:
        b[:] = np.random.default_rng(2).normal(size=b.shape)
    model = cmlp.to_torch(net)
    X = np.random.default_rng(3).normal(size=(11, 5)).astype(dtype)
    with torch.no_grad():
        theirs = model(torch.from_numpy(X)).numpy()
    assert theirs.dtype == dtype
    tolerance = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(net.predict(X), theirs, rtol=0, atol=tolerance)
    assert list(model.state_dict())[:2] == ["0.weight", "0.bias"]


def test_to_torch_copies_the_parameters():
    pytest.importorskip("torch")
    net = cmlp.MLP([2, 2])
    model = cmlp.to_torch(net)
    net.params[:] = 0
    assert model[0].weight.abs().sum().item() > 0


def test_cmlp_does_not_import_torch():
    code = "import sys, cmlp, cmlp.io, cmlp.training; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, check=True).stdout.strip() == "False"


def test_a_sequential_state_dict_loads():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 6),
                                torch.nn.Tanh(), torch.nn.Linear(6, 2), torch.nn.Sigmoid(),
                                torch.nn.Linear(2, 12), torch.nn.Sigmoid(),
                                torch.nn.Linear(12, 1)).double()
    assert "8.weight" in model.state_dict()  # index 8 after index 6: sorted as numbers
    net = cmlp.MLP([3, 8, 6, 2, 12, 1], activation=["relu", "tanh", "sigmoid", "sigmoid", "identity"])
    net.load_state_dict(model.state_dict())
    X = np.random.default_rng(0).normal(size=(4, 3))
    with torch.no_grad():
        np.testing.assert_allclose(net.predict(X), model(torch.from_numpy(X)).numpy(),
                                   rtol=0, atol=1e-12)


def test_the_notebooks_state_dict_loads():
    torch = pytest.importorskip("torch")

    class SimpleMLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer0 = torch.nn.Linear(2, 1)
            self.layer1 = torch.nn.Linear(1, 1)

    model = SimpleMLP()
    net = cmlp.MLP([2, 1, 1])
    net.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(net.weights[0], model.layer0.weight.detach().numpy())
    np.testing.assert_array_equal(net.biases[1], model.layer1.bias.detach().numpy())


def test_layer_state_dict_renaming_rules():
    w, b = np.zeros((2, 2)), np.zeros(2)
    assert list(layer_state_dict({"net.10.weight": w, "net.10.bias": b, "net.2.weight": w,
                                  "net.2.bias": b})) == [
        "layer0.weight", "layer0.bias", "layer1.weight", "layer1.bias"]
    renamed = layer_state_dict({"fc2.weight": 1, "fc2.bias": 2, "fc1.weight": 3, "fc1.bias": 4})
    assert renamed == {"layer0.weight": 1, "layer0.bias": 2, "layer1.weight": 3, "layer1.bias": 4}
    with pytest.raises(ValueError, match="running_mean"):
        layer_state_dict({"0.weight": w, "0.bias": b, "1.running_mean": b})
    with pytest.raises(ValueError, match="no 0.bias"):
        layer_state_dict({"0.weight": w})


def test_from_torch_round_trip(dtype):
    pytest.importorskip("torch")
    net = cmlp.MLP([3, 5, 4, 2], activation=["tanh", "relu", "softmax"], dtype=dtype, seed=4)
    back = from_torch(cmlp.to_torch(net))
    assert repr(back) == repr(net)
    np.testing.assert_array_equal(back.params, net.params)
    identity_hidden = cmlp.MLP([3, 4, 2], activation=["identity", "sigmoid"], seed=1)
    assert from_torch(cmlp.to_torch(identity_hidden)).activation == ("identity", "sigmoid")


def test_from_torch_refuses_what_cmlp_cannot_express():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="Dropout"):
        from_torch(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout()))
    with pytest.raises(ValueError, match="bias"):
        from_torch(torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False)))
    with pytest.raises(ValueError, match="dim=0"):
        from_torch(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Softmax(dim=0)))
    with pytest.raises(ValueError, match="Tanh"):
        from_torch(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Tanh()))


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
