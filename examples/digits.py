"""Handwritten digits with cmlp: train, watch, stop early, save, reload.

scikit-learn's bundled 8x8 digits (1,797 images, no download). A network with
one hidden layer of 64 ReLU units and a softmax output is trained with Adam on
the cross-entropy loss; a validation split drives early stopping, and the
best network is saved to ``digits.npz`` and read back.

Run it with ``python examples/digits.py`` (needs scikit-learn);
``--help`` lists its options.
"""
import argparse
import sys

import numpy as np

import cmlp


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train a 64-64-10 network on scikit-learn's bundled handwritten digits "
                    "(1,797 8x8 images, no download) with Adam and early stopping, report the "
                    "test accuracy, then save the network and load it back.",
        epilog="Needs scikit-learn (pip install scikit-learn).")
    parser.add_argument("--epochs", type=int, default=200,
                        help="most epochs to train (default: %(default)s)")
    parser.add_argument("--patience", type=int, default=10,
                        help="epochs without a better validation loss before stopping "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the initial weights and of the shuffles (default: %(default)s)")
    parser.add_argument("--out", default="digits.npz",
                        help="where to save the trained network (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress line per epoch")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:  # after the options, so that --help needs no scikit-learn
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ModuleNotFoundError:
        sys.exit("examples/digits.py needs scikit-learn, which is not installed: "
                 "pip install scikit-learn")
    X, y = load_digits(return_X_y=True)
    X = X / 16.0  # grey levels 0..16 -> [0, 1]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0,
                                                        stratify=y)
    X_train, X_val, y_train, y_val = train_test_split(X_train, y_train, test_size=0.15,
                                                      random_state=0, stratify=y_train)

    net = cmlp.MLP([64, 64, 10], activation=["relu", "softmax"], seed=args.seed)
    history = net.fit(X_train, y_train, epochs=args.epochs, batch_size=32, loss="cross_entropy",
                      optimizer="adam", lr=0.001, seed=args.seed, validation_data=(X_val, y_val),
                      early_stopping=args.patience, verbose=not args.quiet)
    print(f"stopped after {history.epochs} epochs ({history.stop_reason or 'all epochs run'}); "
          f"best validation loss {min(history.val_loss):.4f} at epoch {history.best_epoch + 1}")

    accuracy = np.mean(net.predict(X_test).argmax(axis=1) == y_test)
    print(f"test accuracy: {100 * accuracy:.1f}% on {len(y_test)} held-out digits")

    net.save(args.out)
    again = cmlp.load(args.out)
    assert np.array_equal(again.predict(X_test), net.predict(X_test))
    print(f"saved to {args.out} and loaded back: identical predictions")


if __name__ == "__main__":
    main()
