"""Hostile use (issue 13): what an attacker tried, and the rule behind each case.

Every case that once crashed the interpreter runs in a child process, so that
a regression kills the child, not pytest. The rules:

(a) every size, stride, dtype and flag a kernel relies on is read from the
    buffer itself, never from attributes an ndarray subclass can override;
(b) unpickling goes through the checks of ``__init__``;
(c) everything is checked before anything is assigned;
(d) the private engine checks its own arguments;
(e) re-entry from the same thread raises a RuntimeError, never hangs;
(f) a training call leaves a model that predicts finite numbers on its
    training data, or raises TrainingDivergedError and restores the last good state;
(g) every read or write of the parameters as a whole is one atomic step
    (its tests are with the other threads, in tests/test_concurrency.py);
(h) inputs that alias the model's own buffers behave as if copied first;
(i) the engine's arrays cannot be reshaped from outside;
(j) only regular files are read, and saves leave nothing behind;
(k) small contracts: sizes, torch layers, masked arrays, Adam's eps.
"""
import copy
import io
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import cmlp
import cmlp.io
from cmlp._kernels import Engine


def run_child(code, timeout=120):
    """Run code in a fresh interpreter; return (returncode, stdout, stderr).

    A crash (a signal) gives a negative return code; a hang, a timeout."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def assert_child_prints(code, expected, timeout=120):
    returncode, stdout, stderr = run_child(code, timeout)
    assert returncode == 0, f"the child died with {returncode}:\n{stderr[-3000:]}"
    assert stdout.split() == expected, stderr[-3000:]


# ---------------------------------------------------------------------------
# 1, 2. Subclasses whose attributes lie
# ---------------------------------------------------------------------------

LIARS = """
import numpy as np, cmlp

class LyingFlags(np.ndarray):
    flags = property(lambda s: type("F", (), dict(c_contiguous=True, aligned=True,
                                                  writeable=True))())

class LyingDtype(np.ndarray):
    dtype = property(lambda s: np.dtype(np.float64))

class LyingShape(np.ndarray):
    shape = property(lambda s: (1,))

def refused(call):
    try:
        call()
    except (TypeError, ValueError) as error:
        return "refused"
    return "accepted"
"""


@pytest.mark.spawns_python
def test_forward_out_whose_flags_or_dtype_lie_is_refused():
    assert_child_prints(LIARS + """
net = cmlp.MLP([2, 10])
X = np.ones((100_000, 2))
print(refused(lambda: net.forward(X, out=np.zeros((100_000, 10))[::-1].view(LyingFlags))))
print(refused(lambda: net.predict(X, out=np.zeros((100_000, 10))[::-1].view(LyingFlags))))
print(refused(lambda: net.forward(X, out=np.zeros((100_000, 10), np.float32).view(LyingDtype))))
out = np.zeros((100_000, 10)).view(LyingFlags)   # truly contiguous: taken, and filled
net.forward(X, out=out)
print(np.array_equal(np.asarray(out), net.predict(X)))
""", ["refused", "refused", "refused", "True"])


@pytest.mark.spawns_python
def test_optimizers_read_sizes_from_the_buffers():
    assert_child_prints(LIARS + """
for make in (lambda p, g: cmlp.Adam(p, g), lambda p, g: cmlp.SGD(p, g),
             lambda p, g: cmlp.SGD(p, g, momentum=0.9, weight_decay=0.1)):
    params = np.zeros(2_000_000).view(LyingShape)
    opt = make(params, np.ones(2_000_000).view(LyingShape))
    opt.step()
    opt.step()
    print(bool((np.asarray(params) < 0).all()))
    # grads shorter than they claim
    print(refused(lambda: make(np.zeros(2_000_000), np.ones(10).view(LyingShape))))
""", ["True", "refused"] * 3)


@pytest.mark.spawns_python
def test_train_epoch_targets_whose_reshape_lies_are_read_as_they_are():
    assert_child_prints("""
import numpy as np, cmlp
class LyingReshape(np.ndarray):
    def reshape(self, *shape):
        return np.zeros((10**6, 1))
net = cmlp.MLP([2, 3, 1], seed=0)
twin = cmlp.MLP([2, 3, 1], seed=0)
X, Y = np.ones((4, 2)), np.arange(4.0)
net._engine.train_epoch(X, Y.view(LyingReshape), None, 4, 0.1, "mse", np.empty(1))
twin._engine.train_epoch(X, Y, None, 4, 0.1, "mse", np.empty(1))
print(np.array_equal(net.params, twin.params))
""", ["True"])


# ---------------------------------------------------------------------------
# 3, 4. Unpickling and a failed re-__init__
# ---------------------------------------------------------------------------

def tampered_states():
    state = cmlp.MLP([2, 3, 2]).__getstate__()
    yield "too many activations", dict(state, _activations=("sigmoid",) * 6)
    yield "too few activations", dict(state, _activations=("sigmoid",))
    yield "an unknown activation", dict(state, _activations=("sigmoid", "bogus"))
    yield "a negative width", dict(state, _sizes=(2, -1, 2))
    yield "a zero width", dict(state, _sizes=(2, 0, 2))
    yield "a float width", dict(state, _sizes=(2, 3.5, 2))
    yield "scalar params", dict(state, params=np.float64(1.0))
    yield "params too short", dict(state, params=np.zeros(3))
    yield "params of strings", dict(state, params=np.array(["a"] * 17))
    yield "another dtype", dict(state, _dtype=np.int32)
    yield "no params", {key: value for key, value in state.items() if key != "params"}
    yield "not a dict", [("params", state["params"])]


@pytest.mark.parametrize("case, state", list(tampered_states()),
                         ids=[case for case, _ in tampered_states()])
def test_a_tampered_pickled_state_is_refused(case, state):
    net = cmlp.MLP.__new__(cmlp.MLP)
    with pytest.raises((TypeError, ValueError)):
        net.__setstate__(state)
    assert "_engine" not in vars(net)


@pytest.mark.spawns_python
def test_a_tampered_pickled_state_never_crashes():
    assert_child_prints("""
import numpy as np, cmlp
s = cmlp.MLP([2, 3, 2]).__getstate__()
s["_activations"] = ("sigmoid",) * 6
m = cmlp.MLP.__new__(cmlp.MLP)
try:
    m.__setstate__(s)
    m.forward(np.ones((5, 2)))
except ValueError:
    print("refused")
""", ["refused"])


def test_a_failed_reinit_leaves_the_model_as_it_was(tmp_path):
    net = cmlp.MLP([2, 3, 2, 2], seed=0)
    before = net.params.copy()
    for arguments in ([[22, 0]], {"activation": "bogus"}, {"dtype": np.int8},
                      {"seed": "not a seed"}):
        args, kwargs = (arguments, {}) if isinstance(arguments, list) else ([[22, 1]], arguments)
        with pytest.raises((TypeError, ValueError)):
            net.__init__(*args, **kwargs)
        assert net.layer_sizes == (2, 3, 2, 2) and net.activation == ("sigmoid",) * 3
        np.testing.assert_array_equal(net.params, before)
    copy.deepcopy(net).forward(np.ones((5, 2)))
    net.save(tmp_path / "net.npz")
    np.testing.assert_array_equal(cmlp.load(tmp_path / "net.npz").params, before)


# ---------------------------------------------------------------------------
# 5. The private engine
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("sizes, codes, dtype", [
    ([2, -1, 2], [1, 1], np.float64),
    ([2, 0, 2], [1, 1], np.float64),
    ([2, 3], [1, 1, 1, 1], np.float64),
    ([2, 3, 2], [1], np.float64),
    ([2, 3], [99], np.float64),
    ([2, 3], [-1], np.float64),
    ([2], [], np.float64),
    ([2, 3], [1], np.int64),
    ([2, 2**40], [1], np.float64),
    (["2", 3], [1], np.float64),
], ids=["negative width", "zero width", "more codes", "fewer codes", "code 99", "code -1",
        "one width", "int dtype", "width beyond BLAS", "a string width"])
def test_the_engine_checks_its_own_arguments(sizes, codes, dtype):
    with pytest.raises((TypeError, ValueError)):
        Engine(sizes, codes, dtype)


@pytest.mark.spawns_python
def test_an_engine_never_initialised_raises_instead_of_crashing():
    assert_child_prints("""
import numpy as np
from cmlp._kernels import Engine
engine = Engine.__new__(Engine)
for name, call in [
        ("forward", lambda: engine.forward(np.ones((3, 2)))),
        ("predict", lambda: engine.predict(np.ones((3, 2)))),
        ("train_step", lambda: engine.train_step(np.ones((3, 2)), np.ones((3, 2)), 0.1)),
        ("sgd_step", lambda: engine.sgd_step(0.1)),
        ("params_finite", lambda: engine.params_finite()),
        ("snapshot", lambda: engine.snapshot()),
        ("train_epoch", lambda: engine.train_epoch(np.ones((3, 0)), np.ones((3, 0)), None, 1,
                                                   0.1, "mse", np.empty(3)))]:
    try:
        call()
        print(name, "ran")
    except (RuntimeError, TypeError, ValueError):
        print(name, "refused")
""", [word for name in ("forward", "predict", "train_step", "sgd_step", "params_finite",
                        "snapshot", "train_epoch") for word in (name, "refused")])


def test_an_engine_is_initialised_once():
    net = cmlp.MLP([2, 3, 2], seed=0)
    before = net.params.copy()
    with pytest.raises(RuntimeError, match="initialised once"):
        net._engine.__init__([22, 1], [1], np.float64)
    np.testing.assert_array_equal(net.params, before)
    assert net.forward(np.ones((4, 2))).shape == (4, 2)


# ---------------------------------------------------------------------------
# 6. Re-entry from the same thread
# ---------------------------------------------------------------------------

@pytest.mark.spawns_python
def test_a_finalizer_that_uses_the_model_never_hangs():
    returncode, stdout, stderr = run_child("""
import gc, weakref
import numpy as np, cmlp
net = cmlp.MLP([4, 8, 2])
class F:
    def __init__(s): s.me = s
    def __del__(s): net.predict(np.ones((1, 4)))
class G:
    def __init__(s): s.me = s
gc.set_threshold(1)
for n in range(2, 200):
    F()
    weakref.finalize(G(), net.predict, np.ones((1, 4)))
    net.forward(np.ones((n, 4)))
gc.set_threshold(700)
gc.collect()
print(net.predict(np.ones((1, 4))).shape)
""", timeout=120)
    assert returncode == 0, stderr[-3000:]
    assert stdout.split() == ["(1,", "2)"]
    # Each re-entry that met the lock raised a RuntimeError that says what happened.
    for line in stderr.splitlines():
        if line.startswith(("RuntimeError", "ValueError", "TypeError")):
            assert "from inside one of its own calls" in line, line


# ---------------------------------------------------------------------------
# 7. A training call never returns a model that predicts NaN
# ---------------------------------------------------------------------------

def classification_data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 4))
    return X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)


@pytest.mark.parametrize("validate", [False, True], ids=["", "validated"])
@pytest.mark.parametrize("batch_size", [40, 120], ids=["3 batches", "1 batch"])
@pytest.mark.parametrize("options", [
    dict(optimizer="sgd"), dict(optimizer="sgd", momentum=0.9), dict(optimizer="adam"),
], ids=["sgd", "momentum", "adam"])
def test_fit_with_a_huge_learning_rate_predicts_finite_numbers_or_raises(options, batch_size,
                                                                         validate):
    # With one batch, the only update is the last, which no batch loss checks.
    X, y = classification_data()
    net = cmlp.MLP([4, 16, 3], activation=["relu", "softmax"], seed=0)
    before = net.params.copy()
    try:
        net.fit(X, y, epochs=1, lr=1e300, loss="cross_entropy", batch_size=batch_size,
                validation_data=(X, y) if validate else None, seed=0, **options)
    except cmlp.TrainingDivergedError as error:
        np.testing.assert_array_equal(net.params, before)
        assert error.history.loss == [] and error.history.val_loss == []
    else:
        assert np.isfinite(net.predict(X)).all()


def test_a_nan_validation_loss_is_divergence():
    # Huge first-layer weights: training inputs of 0 never see them (and leave
    # them be), validation inputs of 10 overflow to inf, then NaN.
    net = cmlp.MLP([4, 16, 3], activation=["relu", "softmax"], seed=0)
    net.weights[0][:] = 1e308
    before = net.params.copy()
    X, y = np.zeros((8, 4)), np.arange(8) % 3
    X_val = np.full((3, 4), 10.0)
    with pytest.raises(cmlp.TrainingDivergedError, match="validation loss"):
        net.fit(X, y, epochs=1, lr=1e-3, loss="cross_entropy", validation_data=(X_val, y[:3]))
    np.testing.assert_array_equal(net.params, before)


def test_partial_fit_with_a_huge_learning_rate_predicts_finite_numbers_or_raises():
    pytest.importorskip("sklearn")
    from cmlp.sklearn import MLPClassifier
    X, y = classification_data()
    model = MLPClassifier((16,), solver="sgd", learning_rate_init=1e300, random_state=0)
    for _ in range(3):
        try:
            model.partial_fit(X, y, classes=[0, 1, 2])
        except cmlp.TrainingDivergedError:
            continue
        assert np.isfinite(model.predict_proba(X)).all()


# ---------------------------------------------------------------------------
# 8. Snapshots and restores are atomic: tested with the other threads in
#    tests/test_concurrency.py (whole snapshots, predictions, state dicts)
# ---------------------------------------------------------------------------


# ---------------------------------------------------------------------------
# 9. Aliasing: as if the inputs were copied first
# ---------------------------------------------------------------------------

def test_load_state_dict_from_views_of_its_own_parameters_swaps_layers():
    net = cmlp.MLP([3, 3, 3], seed=0)
    W0, b0, W1, b1 = (v.copy() for v in (net.weights[0], net.biases[0], net.weights[1],
                                         net.biases[1]))
    net.load_state_dict({"layer0.weight": net.weights[1], "layer0.bias": net.biases[1],
                         "layer1.weight": net.weights[0], "layer1.bias": net.biases[0]})
    for got, want in zip((net.weights[0], net.biases[0], net.weights[1], net.biases[1]),
                         (W1, b1, W0, b0)):
        np.testing.assert_array_equal(got, want)


def test_adam_load_state_dict_from_views_of_its_own_state_swaps_them():
    net = cmlp.MLP([3, 3, 3], seed=0)
    opt = cmlp.Adam(net.params, net.grads)
    net._engine.loss_and_grads(np.ones((2, 3)), np.zeros((2, 3)))
    opt.step()
    m, v = opt.exp_avg.copy(), opt.exp_avg_sq.copy()
    assert not np.array_equal(m, v)
    opt.load_state_dict({"steps": 1, "exp_avg": opt.exp_avg_sq, "exp_avg_sq": opt.exp_avg})
    np.testing.assert_array_equal(opt.exp_avg, v)
    np.testing.assert_array_equal(opt.exp_avg_sq, m)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fit_on_a_view_of_its_own_parameters_trains_on_a_copy(optimizer):
    net = cmlp.MLP([2, 4, 2], activation=["tanh", "identity"], seed=0)   # 22 parameters
    twin = copy.deepcopy(net)
    X = net.params[:20].reshape(10, 2)
    copied, Y = X.copy(), np.ones((10, 2))
    net.fit(X, Y, epochs=3, batch_size=4, optimizer=optimizer, seed=0)
    twin.fit(copied, Y, epochs=3, batch_size=4, optimizer=optimizer, seed=0)
    np.testing.assert_array_equal(net.params, twin.params)


def test_passes_on_views_of_its_own_activations_act_on_copies():
    net = cmlp.MLP([3, 3, 3], activation=["tanh", "identity"], seed=0)
    net.forward(np.arange(12.0).reshape(4, 3))
    for take in (lambda A: A[0][1:], lambda A: A[1], lambda A: A[2][:2]):
        X = take(net.activations)
        copied = X.copy()
        twin = copy.deepcopy(net)
        np.testing.assert_array_equal(net.forward(X), twin.forward(copied))
        X = take(net.activations)
        copied = X.copy()
        twin = copy.deepcopy(net)
        assert net.train_step(X, X, 0.1) == twin.train_step(copied, copied, 0.1)
        np.testing.assert_array_equal(net.params, twin.params)


# ---------------------------------------------------------------------------
# 10. The engine's arrays cannot be reshaped from outside
# ---------------------------------------------------------------------------

def test_reshaping_params_leaves_the_engine_as_it_was(tmp_path):
    net = cmlp.MLP([2, 6, 2], seed=0)   # 32 parameters
    flat = net.params.copy()
    net.params.shape = (2, 16)
    net.grads.shape = (4, 8)
    net._engine.params.shape = (2, 16)
    net.save(tmp_path / "net.npz")
    np.testing.assert_array_equal(cmlp.load(tmp_path / "net.npz").params, flat)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(net))._engine.snapshot(), flat)
    assert net._engine.snapshot().shape == (32,)
    net.load_state_dict(net.state_dict())
    assert net.forward(np.ones((3, 2))).shape == (3, 2)
    twin = cmlp.MLP([2, 6, 2], seed=0)
    X, Y = np.linspace(-1, 1, 20).reshape(10, 2), np.ones((10, 2))
    for optimizer in ("sgd", "adam"):
        net.fit(X, Y, epochs=2, batch_size=4, optimizer=optimizer, seed=0,
                validation_data=(X, Y), early_stopping=1)
        twin.fit(X, Y, epochs=2, batch_size=4, optimizer=optimizer, seed=0,
                 validation_data=(X, Y), early_stopping=1)
        np.testing.assert_array_equal(net._engine.snapshot(), twin.params)


# ---------------------------------------------------------------------------
# 11, 12. Files
# ---------------------------------------------------------------------------

@pytest.mark.spawns_python
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_load_refuses_a_fifo_and_devices(tmp_path):
    fifo = tmp_path / "model.npz"
    os.mkfifo(fifo)
    assert_child_prints(f"""
import cmlp
for path in ({str(fifo)!r}, "/dev/zero", "/dev/null"):
    try:
        cmlp.load(path)
    except ValueError as error:
        print("regular" in str(error))
""", ["True", "True", "True"], timeout=60)


def saved_bytes(net=None):
    file = io.BytesIO()
    (net or cmlp.MLP([2, 3, 1], seed=0)).save(file)
    return file.getvalue()


def test_an_encrypted_member_is_a_value_error(tmp_path):
    # zipfile writes no encrypted members: set the flag in every header by hand.
    data = bytearray(saved_bytes())
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = data.find(signature)
        while start >= 0:
            data[start + flag_offset] |= 0x1
            start = data.find(signature, start + 4)
    path = tmp_path / "encrypted.npz"
    path.write_bytes(bytes(data))
    assert all(info.flag_bits & 0x1 for info in zipfile.ZipFile(path).infolist())
    with pytest.raises(ValueError, match="encrypted"):
        cmlp.load(path)
    with pytest.raises(ValueError, match="encrypted"):
        cmlp.load(io.BytesIO(bytes(data)))


def test_save_takes_bytes_paths(tmp_path):
    net = cmlp.MLP([2, 3, 1], seed=0)
    path = os.fsencode(tmp_path / "net.npz")
    net.save(path)
    np.testing.assert_array_equal(cmlp.load(path).params, net.params)


def test_the_longest_legal_file_name_saves(tmp_path):
    net = cmlp.MLP([2, 3, 1], seed=0)
    path = tmp_path / ("m" * 250 + ".npz")
    net.save(path)
    net.save(path)
    np.testing.assert_array_equal(cmlp.load(path).params, net.params)
    assert os.listdir(tmp_path) == [path.name]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links here")
def test_save_writes_through_a_symbolic_link(tmp_path):
    target, link = tmp_path / "target.npz", tmp_path / "link.npz"
    cmlp.MLP([2, 3, 1], seed=0).save(target)
    link.symlink_to(target)
    net = cmlp.MLP([2, 3, 1], seed=1)
    net.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    np.testing.assert_array_equal(cmlp.load(target).params, net.params)
    assert sorted(os.listdir(tmp_path)) == ["link.npz", "target.npz"]


def test_the_next_save_removes_what_killed_saves_left(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    path = tmp_path / "model.npz"
    stale = [tmp_path / f".model.npz.{i:016x}.tmp" for i in range(3)]
    for leftover in stale:
        leftover.write_bytes(b"PK half a model")
    busy = tmp_path / ".model.npz.ffffffffffffffff.tmp"   # a save still running: locked
    unrelated = [tmp_path / ".model.npz.backup.tmp", tmp_path / ".other.npz.0000000000000000.tmp"]
    for other in unrelated + [busy]:
        other.write_bytes(b"keep me")
    empty_and_old = tmp_path / ".model.npz.eeeeeeeeeeeeeeee.tmp"   # killed before writing
    empty_and_old.write_bytes(b"")
    os.utime(empty_and_old, (0, 0))
    just_created = tmp_path / ".model.npz.dddddddddddddddd.tmp"   # a save about to lock it
    just_created.write_bytes(b"")
    unrelated.append(just_created)
    with open(busy, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        cmlp.MLP([2, 3, 1], seed=0).save(path)
        left = sorted(os.listdir(tmp_path))
    assert left == sorted(p.name for p in [path, busy] + unrelated)


# ---------------------------------------------------------------------------
# 13. Small contracts
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("sizes", [[2**31 - 1] * 3, [2**31 - 1] * 9000, [1, 2**31 - 1, 2**31 - 1]])
def test_an_oversized_network_is_a_value_error_naming_its_size(sizes):
    with pytest.raises(ValueError, match="parameters"):
        cmlp.MLP(sizes)
    with pytest.raises(ValueError, match="parameters"):
        Engine(sizes, [1] * (len(sizes) - 1), np.float64)


def test_from_torch_with_a_one_dimensional_weight_is_a_value_error():
    torch = pytest.importorskip("torch")
    linear = torch.nn.Linear(3, 2)
    linear.weight = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="weight of shape"):
        cmlp.io.from_torch(torch.nn.Sequential(linear))


def test_masked_arrays_are_refused():
    net = cmlp.MLP([2, 3, 1], seed=0)
    X = np.ma.masked_array(np.ones((4, 2)), mask=[[0, 1]] * 4)
    Y = np.ma.masked_array(np.ones(4), mask=[0, 1, 0, 0])
    for call in (lambda: net.forward(X), lambda: net.predict(X),
                 lambda: net.train_step(np.ones((4, 2)), Y, 0.1),
                 lambda: net.fit(X, np.ones(4)), lambda: net.fit(np.ones((4, 2)), Y),
                 lambda: net.load_state_dict({k: np.ma.masked_array(v) for k, v in
                                              net.state_dict().items()})):
        with pytest.raises(TypeError, match="masked"):
            call()


def test_adam_refuses_eps_zero():
    net = cmlp.MLP([2, 3, 1])
    with pytest.raises(ValueError, match="eps"):
        cmlp.Adam(net.params, net.grads, eps=0)
    with pytest.raises(ValueError, match="eps"):
        cmlp.Adam(net.params, net.grads, eps=-0.0)


def test_fit_takes_an_optimizer_over_the_models_buffers_only():
    net = cmlp.MLP([2, 6, 2], seed=0)
    X, Y = np.linspace(-1, 1, 20).reshape(10, 2), np.ones((10, 2))
    for params, grads in [(net.params.copy(), net.grads), (net.params, net.grads.copy()),
                          (net.params[:-1], net.grads[:-1])]:
        with pytest.raises(ValueError, match="built over this network"):
            net.fit(X, Y, optimizer=cmlp.SGD(params, grads, lr=0.1))
    own = cmlp.Adam(net.params, net.grads)
    net.params.shape = (2, 16)   # the optimizer keeps working on the buffers themselves
    net.fit(X, Y, optimizer=own)
    assert own.steps == 1   # one epoch of one batch
