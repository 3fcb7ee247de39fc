"""Coverage-guided fuzzing of cmlp's public API with atheris (libFuzzer for Python).

Each input is a byte string that decides an architecture and a sequence of
calls -- forward, predict, backward, train_step, sgd_step, load_state_dict,
fit, save and load (of the saved bytes, or of those bytes damaged) --
with arrays whose dtype, shape, memory layout and raw bits (so any NaN
payload, inf, subnormal) come from the fuzzer. What must hold for every input:

* a call either returns or raises TypeError, ValueError, RuntimeError or
  (fit's divergence) FloatingPointError with a message; anything else, and
  any crash (which libFuzzer catches), is a bug;
* a refused call leaves the parameters bit for bit as they were (a diverged
  fit leaves them finite);
* load gives back the saved model, or refuses damaged bytes;
* predict and forward agree (NaN where NaN), and return the documented shape and dtype.

Run it (``pip install atheris``), from the repository root:

    python fuzz/fuzz_cmlp.py -max_total_time=600          # ten minutes
    python fuzz/fuzz_cmlp.py fuzz/corpus -runs=100000     # keep a corpus between runs

Coverage guides the search through cmlp's Python layer (instrumented below);
the compiled kernels are reached with every shape and value the validation
lets through, and a memory error there crashes the process, which libFuzzer
reports with the input that caused it. Run it against the build of
tools/sanitize.sh to catch silent memory errors too.
"""
import io
import sys

import atheris

with atheris.instrument_imports(include=["cmlp"]):
    import numpy as np

    import cmlp

ACTIVATIONS = ["sigmoid", "tanh", "relu", "identity", "softmax"]
LOSSES = ["mse", "half_sse", "bce", "cross_entropy", "hinge"]
DTYPES = ["float64", "float32", "float16", "int8", "int64", "uint64", "bool", "complex128",
          "longdouble", ">f8", "<f4", "object", "U3"]
# FloatingPointError: fit's TrainingDivergedError, raised with the parameters restored.
DOCUMENTED = (TypeError, ValueError, RuntimeError, FloatingPointError)
REFUSED = object()


def draw_shape(fdp, n_in, n_out_like):
    """Mostly the shapes cmlp expects, but any rank from 0 to 3 with small dims."""
    kind = fdp.ConsumeIntInRange(0, 6)
    n = fdp.ConsumeIntInRange(0, 9)
    if kind <= 2:
        return (n, n_in)
    if kind == 3:
        return (n_in,)
    if kind == 4:
        return (n, n_out_like)
    rank = fdp.ConsumeIntInRange(0, 3)
    return tuple(fdp.ConsumeIntInRange(0, 6) for _ in range(rank))


def draw_array(fdp, shape):
    dtype = np.dtype(fdp.PickValueInList(DTYPES))
    size = int(np.prod(shape))
    if dtype.kind in "biufc":
        raw = fdp.ConsumeBytes(size * dtype.itemsize)
        raw = raw + bytes(size * dtype.itemsize - len(raw))
        array = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        if dtype.kind == "b":
            array = array.view(np.uint8).astype(bool)  # only 0 and 1 are valid bools
    elif dtype.kind == "O":
        array = np.array([fdp.ConsumeRegularFloat() for _ in range(size)],
                         dtype=object).reshape(shape)
    else:
        array = np.array([fdp.ConsumeUnicode(3) for _ in range(size)], dtype=dtype).reshape(shape)
    return relayout(fdp, array)


def relayout(fdp, array):
    """The same values in another memory layout, or as nested lists."""
    how = fdp.ConsumeIntInRange(0, 7)
    if how == 1:
        return np.asfortranarray(array)
    if how == 2 and array.ndim:
        return np.repeat(array, 2, axis=-1)[..., ::2]
    if how == 3 and array.ndim:
        flip = (slice(None, None, -1),) * array.ndim
        return array[flip].copy()[flip]
    if how == 4:
        array = array.copy()
        array.flags.writeable = False
        return array
    if how == 5 and array.dtype.kind in "biufc":
        raw = bytearray(array.nbytes + 1)
        moved = np.frombuffer(raw, dtype=array.dtype, count=array.size,
                              offset=1).reshape(array.shape)
        moved[...] = array
        return moved
    if how == 6:
        return array.tolist()
    return array


def call(function, *args, **kwargs):
    """function(...), or REFUSED if it refused in a documented way."""
    try:
        return function(*args, **kwargs)
    except DOCUMENTED as error:
        if not str(error):
            raise AssertionError(f"{type(error).__name__} without a message") from error
        return REFUSED


def test_one_input(data):
    fdp = atheris.FuzzedDataProvider(data)
    depth = fdp.ConsumeIntInRange(1, 3)
    sizes = [fdp.ConsumeIntInRange(1, 6) for _ in range(depth + 1)]
    activations = [fdp.PickValueInList(ACTIVATIONS) for _ in range(depth)]
    dtype = np.float32 if fdp.ConsumeBool() else np.float64
    net = cmlp.MLP(sizes, activation=activations, dtype=dtype, seed=0)
    n_in, n_out = sizes[0], sizes[-1]
    for _ in range(fdp.ConsumeIntInRange(1, 6)):
        action = fdp.ConsumeIntInRange(0, 8)
        before = net.params.copy()
        if action <= 1:
            X = draw_array(fdp, draw_shape(fdp, n_in, n_out))
            kept = call(net.forward, X)
            predicted = call(net.predict, X)
            if (kept is REFUSED) != (predicted is REFUSED):
                raise AssertionError("forward and predict disagree on whether X is valid")
            if kept is not REFUSED:
                assert kept.dtype == net.dtype and kept.shape[-1] == n_out
                # Equal values; a NaN's payload bits carry no meaning and may differ.
                assert np.array_equal(kept, predicted, equal_nan=True), "predict differs from forward"
        elif action == 2:
            Y = draw_array(fdp, draw_shape(fdp, n_out, n_out))
            call(net.backward, Y, loss=fdp.PickValueInList(LOSSES))
        elif action == 3:
            X = draw_array(fdp, draw_shape(fdp, n_in, n_out))
            Y = draw_array(fdp, draw_shape(fdp, n_out, n_out))
            lr = fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else fdp.ConsumeFloat()
            if call(net.train_step, X, Y, lr, loss=fdp.PickValueInList(LOSSES)) is REFUSED:
                assert net.params.tobytes() == before.tobytes(), "a refused step changed params"
        elif action == 4:
            if call(net.sgd_step, fdp.ConsumeFloat()) is REFUSED:
                assert net.params.tobytes() == before.tobytes(), "a refused step changed params"
        elif action == 5:
            state = {name: draw_array(fdp, value.shape if fdp.ConsumeBool() else
                                      draw_shape(fdp, n_in, n_out))
                     for name, value in net.named_parameters()}
            if call(net.load_state_dict, state) is REFUSED:
                assert net.params.tobytes() == before.tobytes(), "a refused load changed params"
        elif action == 6:
            out = draw_array(fdp, draw_shape(fdp, n_out, n_out))
            call(net.forward, draw_array(fdp, draw_shape(fdp, n_in, n_out)), out=out)
        elif action == 7:
            X = draw_array(fdp, draw_shape(fdp, n_in, n_out))
            Y = draw_array(fdp, draw_shape(fdp, n_out, n_out))
            history = call(net.fit, X, Y, epochs=fdp.ConsumeIntInRange(0, 3),
                           batch_size=fdp.ConsumeIntInRange(1, 8), lr=fdp.ConsumeFloat(),
                           loss=fdp.PickValueInList(LOSSES),
                           optimizer=fdp.PickValueInList(["sgd", "adam"]),
                           momentum=fdp.ConsumeProbability())
            if history is REFUSED:
                # Refused up front, or diverged and restored to the start of an epoch.
                assert np.isfinite(net.params).all() or not np.isfinite(before).all()
            else:
                # A fit that succeeds, or stops on divergence, leaves finite parameters
                # wherever they started finite.
                assert np.isfinite(net.params).all() or not np.isfinite(before).all()
        else:
            saved = io.BytesIO()
            net.save(saved)
            data = bytearray(saved.getvalue())
            for _ in range(fdp.ConsumeIntInRange(0, 3)):  # damage it, or not
                data[fdp.ConsumeIntInRange(0, len(data) - 1)] ^= fdp.ConsumeIntInRange(1, 255)
            loaded = call(cmlp.load, io.BytesIO(bytes(data)))
            if loaded is not REFUSED:
                assert repr(loaded) == repr(net), "load gave another architecture"
                assert np.array_equal(loaded.params, net.params, equal_nan=True), \
                    "load gave other parameters"
        assert net.params.shape == before.shape and net.params.dtype == net.dtype


def main():
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
