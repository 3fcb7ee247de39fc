"""Handwritten digits with cmlp: train, watch, stop early, save, reload.

scikit-learn's bundled 8x8 digits (1,797 images, no download). A network with
one hidden layer of 64 ReLU units and a softmax output is trained with Adam on
the cross-entropy loss; a validation split drives early stopping, and the
best network is saved to ``digits.npz`` and read back.

Run it with ``python examples/digits.py`` (needs scikit-learn).
"""
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import cmlp


def main():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0  # grey levels 0..16 -> [0, 1]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0,
                                                        stratify=y)
    X_train, X_val, y_train, y_val = train_test_split(X_train, y_train, test_size=0.15,
                                                      random_state=0, stratify=y_train)

    net = cmlp.MLP([64, 64, 10], activation=["relu", "softmax"], seed=0)
    history = net.fit(X_train, y_train, epochs=200, batch_size=32, loss="cross_entropy",
                      optimizer="adam", lr=0.001, seed=0, validation_data=(X_val, y_val),
                      early_stopping=10, verbose=True)
    print(f"stopped after {history.epochs} epochs ({history.stop_reason or 'all epochs run'}); "
          f"best validation loss {min(history.val_loss):.4f} at epoch {history.best_epoch + 1}")

    accuracy = np.mean(net.predict(X_test).argmax(axis=1) == y_test)
    print(f"test accuracy: {100 * accuracy:.1f}% on {len(y_test)} held-out digits")

    net.save("digits.npz")
    again = cmlp.load("digits.npz")
    assert np.array_equal(again.predict(X_test), net.predict(X_test))
    print("saved to digits.npz and loaded back: identical predictions")


if __name__ == "__main__":
    main()
