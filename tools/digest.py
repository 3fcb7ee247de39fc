"""One SHA-256 of every parameter and loss after a fixed set of training runs.

A restructuring that should move no number runs this before and after and
compares the two lines it prints. The runs cover both dtypes, every activation
and loss, SGD (plain, momentum, Nesterov), Adam with weight decay, ``fit``
with a seed, single steps with ``train_step`` and ``backward`` + ``sgd_step``,
the reference notebook, and a network large enough for its products to go to
BLAS. The digest is that of this machine and build: compare it only with one
printed on the same machine (tests/test_same_bits_everywhere.py holds the
digests that must hold on every processor).

    python tools/digest.py            # the digest
    python tools/digest.py --verbose  # one digest per run as well
"""
import argparse
import hashlib

import numpy as np

import cmlp

DTYPES = (np.float32, np.float64)


def data(n, width, dtype, salt):
    rng = np.random.default_rng(salt)
    return rng.standard_normal((n, width)).astype(dtype)


def targets(n, width, loss, dtype, salt):
    rng = np.random.default_rng(salt + 1)
    if loss == "cross_entropy":
        return np.eye(width, dtype=dtype)[rng.integers(0, width, n)]
    if loss == "bce":
        return (rng.random((n, width)) < 0.5).astype(dtype)
    return rng.standard_normal((n, width)).astype(dtype)


def notebook(dtype):
    net = cmlp.MLP([2, 1, 1], activation="sigmoid", dtype=dtype)
    net.params[:] = 0.5
    for b in net.biases:
        b[:] = 1.0
    X, Y = np.array([[1.0, 2.0]], dtype), np.array([[0.4]], dtype)
    losses = [net.train_step(X, Y, 0.1, loss="mse") for _ in range(3)]
    return [net.params, net.grads, np.asarray(losses, np.float64)]


def stepped(sizes, activation, loss, dtype, salt):
    """train_step, then backward + sgd_step, batch by batch."""
    net = cmlp.MLP(sizes, activation=activation, dtype=dtype, seed=salt)
    X, Y = data(24, sizes[0], dtype, salt), targets(24, sizes[-1], loss, dtype, salt)
    losses = []
    for start in range(0, 24, 8):
        losses.append(net.train_step(X[start:start + 8], Y[start:start + 8], 0.05, loss=loss))
    net.forward(X)
    losses.append(net.backward(Y, loss=loss))
    net.sgd_step(0.05)
    return [net.params, net.grads, net.predict(X), np.asarray(losses, np.float64)]


def fitted(sizes, activation, loss, dtype, salt, n=60, batch_size=16, **options):
    net = cmlp.MLP(sizes, activation=activation, dtype=dtype, seed=salt)
    X, Y = data(n, sizes[0], dtype, salt), targets(n, sizes[-1], loss, dtype, salt)
    lr = 0.01 if options.get("optimizer") == "adam" else 0.1
    history = net.fit(X, Y, epochs=3, batch_size=batch_size, lr=lr, loss=loss, seed=salt,
                      validation_data=(X[:10], Y[:10]), **options)
    return [net.params, net.predict(X), np.asarray(history.loss, np.float64),
            np.asarray(history.val_loss, np.float64)]


def runs():
    for dtype in DTYPES:
        name = np.dtype(dtype).name
        yield f"notebook/{name}", lambda d=dtype: notebook(d)
        for i, activation in enumerate(cmlp._kernels.ACTIVATIONS):
            if activation == "softmax":
                continue
            for loss in ("mse", "half_sse", "bce"):
                act = [activation, "sigmoid"] if loss == "bce" else activation
                yield (f"step/{activation}/{loss}/{name}",
                       lambda a=act, lo=loss, d=dtype, s=i: stepped([3, 5, 2], a, lo, d, s))
        yield (f"step/softmax/cross_entropy/{name}",
               lambda d=dtype: stepped([4, 6, 3], ["tanh", "softmax"], "cross_entropy", d, 9))
        yield (f"fit/sgd/{name}",
               lambda d=dtype: fitted([4, 8, 2], "tanh", "mse", d, 1, optimizer="sgd"))
        yield (f"fit/momentum/{name}",
               lambda d=dtype: fitted([4, 8, 1], "sigmoid", "bce", d, 2, optimizer="sgd",
                                      momentum=0.9))
        yield (f"fit/nesterov/{name}",
               lambda d=dtype: fitted([4, 8, 3], ["relu", "softmax"], "cross_entropy", d, 3,
                                      optimizer="sgd", momentum=0.9, nesterov=True,
                                      weight_decay=1e-3))
        yield (f"fit/adam/{name}",
               lambda d=dtype: fitted([5, 16, 16, 2], ["relu", "tanh", "identity"], "half_sse",
                                      d, 4, optimizer="adam", weight_decay=1e-3))
        # Products well above the BLAS threshold.
        yield (f"fit/blas/{name}",
               lambda d=dtype: fitted([96, 128, 10], ["relu", "softmax"], "cross_entropy", d, 5,
                                      n=256, batch_size=64, optimizer="adam"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="print each run's digest too")
    args = parser.parse_args()
    total = hashlib.sha256()
    for name, run in runs():
        one = hashlib.sha256()
        for array in run():
            one.update(np.ascontiguousarray(array).tobytes())
        total.update(one.digest())
        if args.verbose:
            print(f"{one.hexdigest()[:16]}  {name}")
    print(total.hexdigest())


if __name__ == "__main__":
    main()
