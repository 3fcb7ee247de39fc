"""Draw a small network with its numbers: each unit's z, a and δ, each weight and its gradient.

:func:`backprop` runs the network on a sample (or a batch) and draws what the
forward pass and, given targets, the backward pass computed, and, given a
learning rate, where one SGD step would move each parameter. The tutorial's
figures of the reference notebook's network are drawn by it. It is for
networks small enough to read: up to :data:`MAX_UNITS` units and
:data:`MAX_WEIGHTS` weights. It leaves out anything that would not fit beside
an arrow (optimizer state, per-sample values of a batch). matplotlib is an
optional dependency (``pip install matplotlib``), imported when this module is.

The figure is sized in inches for the network (about 2 in between layers),
so that its text stays legible when a narrow screen shows it whole; saved as
SVG (``fig.savefig("net.svg")``) it scales without blurring.

Every number drawn is a :class:`matplotlib.text.Text` whose ``gid`` says what
it is, so that a program (or a test) can read the figure back:

==================  ===================================================
``gid``             text
==================  ===================================================
``"z 1 0"``         z of unit 0 of layer 1 (``a 1 0``, ``delta 1 0`` alike)
``"w 0 0 1"``       ``W₀[0, 1]``: its value, then its value after the step
``"grad w 0 0 1"``  ``∂L/∂W₀[0, 1]``
``"b 1 0"``         the bias of unit 0 of layer 1, then after the step
``"grad b 1 0"``    its gradient
==================  ===================================================
"""
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from cmlp._optional import require

if TYPE_CHECKING:
    import matplotlib.axes

    from cmlp.network import MLP

plt = require("matplotlib.pyplot", "cmlp.plot")

__all__ = ["backprop", "MAX_UNITS", "MAX_WEIGHTS"]

#: The most units (inputs included) that :func:`backprop` draws.
MAX_UNITS = 40
#: The most weights that :func:`backprop` draws, each with its labels.
MAX_WEIGHTS = 120

# The layout, in inches: the figure is drawn at one data unit per inch, so
# these are also the printed sizes that keep 9-10 pt text apart.
_LAYER_GAP = 2.0
_UNIT_GAP = 1.7
_RADIUS = 0.22
_FONT_SIZE = 11
_WEIGHT_FONT_SIZE = 10
_LINE = 0.2  # the height of one line of _FONT_SIZE text

_INPUT_COLOUR, _UNIT_COLOUR = "#dbe9f6", "#fde4c8"
_GRADIENT_COLOUR = "#b2182b"
# Behind a unit's numbers, so that the arrows that pass under them do not cross the digits.
_LABEL_BACKGROUND = dict(facecolor="white", edgecolor="none", alpha=0.85, pad=0.4)
_SYMBOLS = {"sigmoid": "σ", "tanh": "tanh", "relu": "relu", "identity": "id", "softmax": "soft\nmax"}


def backprop(net: "MLP", X: ArrayLike, Y: ArrayLike | None = None, *, loss: str = "mse",
             lr: float | None = None, digits: int = 4,
             ax: "matplotlib.axes.Axes | None" = None) -> "matplotlib.axes.Axes":
    """Draw ``net`` with the numbers of its forward pass on ``X`` and, given ``Y``, its backward pass.

    Parameters
    ----------
    net : cmlp.MLP
        At most :data:`MAX_UNITS` units (inputs included) and
        :data:`MAX_WEIGHTS` weights.
    X : array_like, shape ``(n_in,)`` or ``(n, n_in)``
        One sample, or a batch: for a batch each unit shows the batch mean of
        its z and a.
    Y : array_like, optional
        Targets, as :meth:`cmlp.MLP.backward` takes them. Without them only the
        forward pass is drawn.
    loss : {"mse", "half_sse", "bce", "cross_entropy"}, default "mse"
        The loss whose gradients are drawn.
    lr : float, optional
        With ``Y``: also draw each parameter's value after one SGD step of
        this learning rate, ``w − lr·∂L/∂w``, as ``old → new``. The step is
        computed for the figure, not taken: the parameters are not changed.
    digits : int, default 4
        Significant digits of every number drawn.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure sized for the network otherwise.

    Returns
    -------
    matplotlib.axes.Axes

    Notes
    -----
    The drawing calls ``net.forward(X)`` and ``net.backward(Y, loss)``, so it
    leaves :attr:`~cmlp.MLP.activations`, :attr:`~cmlp.MLP.deltas` and
    :attr:`~cmlp.MLP.grads` as those calls do; the parameters are not changed.
    δ is ``net.deltas`` summed over the batch, ``∂L/∂z`` of the batch loss,
    which is also the bias's gradient; for one sample it is the textbook delta.
    Each arrow carries its weight ``w`` and, below it in red, ``∂L/∂w``.

    Examples
    --------
    >>> import numpy as np, cmlp, cmlp.plot
    >>> net = cmlp.MLP([2, 1, 1])
    >>> for W, b in zip(net.weights, net.biases):
    ...     W[:] = 0.5
    ...     b[:] = 1.0
    ...
    >>> ax = cmlp.plot.backprop(net, np.array([1.0, 2.0]), np.array([0.4]), lr=0.1)
    >>> [t.get_text() for t in ax.texts if t.get_gid() in ("a 2 0", "w 1 0 0")]
    ['w = 0.5 → 0.4884', 'a = 0.8118']
    """
    _check_size(net)
    digits = int(digits)
    if digits < 1:
        raise ValueError(f"digits must be >= 1, got {digits}")
    if lr is not None and Y is None:
        raise ValueError("lr draws the SGD step, which needs the targets Y")
    passes = _Passes(net, X, Y, loss)

    def number(value):
        return f"{float(value):.{digits}g}"

    def parameter(name, value, grad):
        """'w = 0.5', or with lr 'w = 0.5 → 0.4942'."""
        text = f"{name} = {number(value)}"
        return text if lr is None else f"{text} → {number(value - lr * grad)}"

    on_arrows = [_labels_fit_on_arrows(W.shape) for W in net.weights]
    tables = [None if fits else _Table(W.shape, passes.backward, lr is not None, digits)
              for W, fits in zip(net.weights, on_arrows)]
    positions = _layout(net.layer_sizes, [table.width if table else 0.0 for table in tables])
    own_figure = ax is None
    if own_figure:
        ax = _axes_for(positions)

    for l, (W, table) in enumerate(zip(net.weights, tables)):
        grads = net.weight_grads[l] if passes.backward else None
        for j in range(W.shape[0]):
            for i in range(W.shape[1]):
                start, end = positions[l][i], positions[l + 1][j]
                _arrow(ax, start, end)
                if table:
                    continue
                grad = None if grads is None else grads[j, i]
                _arrow_labels(ax, start, end, parameter("w", W[j, i], grad),
                              None if grad is None else f"∂L/∂w = {number(grad)}", gid=f"{l} {j} {i}")
        if table:
            table.draw(ax, l, positions, W, grads, number, lr)

    mean = "mean " if passes.batch else ""
    for l, column in enumerate(positions):
        for j, centre in enumerate(column):
            if l == 0:
                _unit(ax, centre, f"x{_subscript(j + 1)}", _INPUT_COLOUR)
                _below(ax, centre, [(f"{mean}a = {number(passes.A[0][j])}", "a", None)], l, j)
                continue
            _unit(ax, centre, _SYMBOLS[net.activation[l - 1]], _UNIT_COLOUR)
            lines = [(f"{mean}z = {number(passes.Z[l - 1][j])}", "z", None),
                     (f"{mean}a = {number(passes.A[l][j])}", "a", None)]
            grad = None
            if passes.backward:
                grad = net.bias_grads[l - 1][j]
                lines.append((f"δ = {number(passes.deltas[l - 1][j])}", "delta", _GRADIENT_COLOUR))
            _below(ax, centre, lines, l, j)
            above = [(parameter("b", net.biases[l - 1][j], grad), "b", None)]
            if grad is not None:
                above.insert(0, (f"∂L/∂b = {number(grad)}", "grad b", _GRADIENT_COLOUR))
            fed_from_above = not tables[l - 1] and any(y > centre[1] + 0.05 for _, y in positions[l - 1])
            _above(ax, centre, above, l, j, run_right=fed_from_above)

    title = _title(passes, loss, lr)
    if not own_figure:
        ax.set_title(title, fontsize=_FONT_SIZE, loc="left")
        return ax
    # In a figure of its own the title is a label like the others, over the
    # rest, so that _fit_figure makes room for it too.
    _fit_figure(ax)
    x_left = min(x for column in positions for x, _ in column) - _RADIUS
    ax.text(x_left, ax.get_ylim()[1], title, ha="left", va="bottom", fontsize=_FONT_SIZE)
    _fit_figure(ax)
    return ax


class _Passes:
    """What the figure shows of one pass, per unit: batch means of z and a, δ summed over the batch."""

    def __init__(self, net, X, Y, loss):
        net.forward(X)
        self.backward = Y is not None
        if self.backward:
            net.backward(Y, loss=loss)
        activations = [np.asarray(a, dtype=np.float64) for a in net.activations]
        self.n = activations[0].shape[0]
        self.batch = self.n > 1
        # cmlp keeps the activations, not the weighted sums: z is recomputed from them.
        weighted_sums = [a @ np.asarray(W, np.float64).T + b
                         for a, W, b in zip(activations, net.weights, net.biases)]
        self.A = [a.mean(axis=0) for a in activations]
        self.Z = [z.mean(axis=0) for z in weighted_sums]
        self.deltas = [d.sum(axis=0) for d in net.deltas] if self.backward else None


def _check_size(net):
    sizes = net.layer_sizes
    n_weights = sum(W.size for W in net.weights)
    if sum(sizes) > MAX_UNITS or n_weights > MAX_WEIGHTS:
        raise ValueError(f"cmlp.plot.backprop draws at most {MAX_UNITS} units and {MAX_WEIGHTS} "
                         f"weights; this network has {sum(sizes)} and {n_weights}")


def _title(passes, loss, lr):
    title = f"forward and backward pass, loss={loss!r}" if passes.backward else "forward pass"
    if lr is not None:
        title += f"\nold → new: one SGD step, lr = {lr:g}"
    if passes.batch:
        title += f"\nbatch of {passes.n}: means of z and a, sums of δ"
    return title


def _layout(sizes, table_widths):
    """Centres of the units, in inches: one column per layer, each column centred on y = 0.

    Two columns stand :data:`_LAYER_GAP` apart, or wider where the table of
    the weights between them needs it.
    """
    gaps = [max(_LAYER_GAP, width + 0.3) for width in table_widths]
    xs = np.concatenate([[0.0], np.cumsum(gaps)])
    return [[(float(x), _UNIT_GAP * ((n - 1) / 2 - j)) for j in range(n)] for x, n in zip(xs, sizes)]


def _labels_fit_on_arrows(shape):
    """Whether a layer's weights can be labelled on their arrows: a few, fanning out or in, none crossing."""
    n_out, n_in = shape
    return min(n_out, n_in) == 1 and n_out * n_in <= 3


class _Table:
    """The weights of a layer whose arrows are too many to label: a matrix under the gap they span.

    One row per unit fed, one column per unit read, as ``W`` is indexed; a
    layer that reads more units than it feeds is shown as ``Wᵀ`` (one row
    per unit read), so that the table grows down, not across. The values
    (``old → new`` with a learning rate) come first, then the gradients in red.
    """

    _CELL_HEIGHT = 0.18

    def __init__(self, shape, backward, step, digits):
        n_out, n_in = shape
        self.transposed = n_in > n_out
        self.n_rows, self.n_columns = (n_in, n_out) if self.transposed else (n_out, n_in)
        # A number of `digits` significant digits takes about digits + 5
        # characters ("-0.001234"), and a character about 0.07 in at 10 pt.
        characters = 2 * (digits + 5) + 3 if step else digits + 5
        self.cell_width = 0.07 * characters + 0.15
        self.width = self.cell_width * self.n_columns
        blocks = 2 if backward else 1
        self.height = blocks * (self.n_rows + 1) * self._CELL_HEIGHT + (blocks - 1) * 0.1

    def draw(self, ax, l, positions, W, grads, number, lr):
        x_mid = (positions[l][0][0] + positions[l + 1][0][0]) / 2
        top = min(y for column in positions for _, y in column) - _RADIUS - 3 * _LINE - 0.25
        name = f"W{_subscript(l)}" + ("ᵀ" if self.transposed else "")
        blocks = [(name if lr is None else f"{name} → after the step", "w", None, W)]
        if grads is not None:
            blocks.append((f"∂L/∂{name}", "grad w", _GRADIENT_COLOUR, grads))
        y = top
        for heading, what, colour, values in blocks:
            ax.text(x_mid, y, heading, ha="center", va="top", fontsize=_WEIGHT_FONT_SIZE,
                    color=colour or "black", fontweight="bold")
            for row in range(self.n_rows):
                for column in range(self.n_columns):
                    j, i = (column, row) if self.transposed else (row, column)
                    text = number(values[j, i])
                    if what == "w" and lr is not None:
                        text += f" → {number(W[j, i] - lr * grads[j, i])}"
                    x = x_mid + self.cell_width * (column - (self.n_columns - 1) / 2)
                    ax.text(x, y - self._CELL_HEIGHT * (row + 1), text, ha="center", va="top",
                            fontsize=_WEIGHT_FONT_SIZE, color=colour or "black",
                            gid=f"{what} {l} {j} {i}")
            y -= self._CELL_HEIGHT * (self.n_rows + 1) + 0.1


def _axes_for(positions):
    """A new figure at one data unit per inch, just around the units: _fit_figure adds the labels."""
    xs = [x for column in positions for x, _ in column]
    ys = [y for column in positions for _, y in column]
    fig = plt.figure(figsize=(max(xs) - min(xs) + 2 * _RADIUS, max(ys) - min(ys) + 2 * _RADIUS))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(min(xs) - _RADIUS, max(xs) + _RADIUS)
    ax.set_ylim(min(ys) - _RADIUS, max(ys) + _RADIUS)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax


def _fit_figure(ax, pad=0.12):
    """Grow the axes' limits, and the figure with them, to take in every label as drawn.

    The figure stays at one data unit per inch: a longer number widens the
    figure instead of being cut off or shrinking the text.
    """
    renderer = ax.figure.canvas.get_renderer()
    to_data = ax.transData.inverted()
    boxes = [text.get_window_extent(renderer).transformed(to_data) for text in ax.texts]
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    x0, x1 = min([x0] + [b.x0 - pad for b in boxes]), max([x1] + [b.x1 + pad for b in boxes])
    y0, y1 = min([y0] + [b.y0 - pad for b in boxes]), max([y1] + [b.y1 + pad for b in boxes])
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.figure.set_size_inches(x1 - x0, y1 - y0)


def _unit(ax, centre, symbol, colour):
    ax.add_patch(plt.Circle(centre, _RADIUS, facecolor=colour, edgecolor="0.25", lw=1.1))
    ax.text(*centre, symbol, ha="center", va="center", fontsize=_FONT_SIZE if len(symbol) < 3 else 7)


def _below(ax, centre, lines, l, j):
    """Lines of (text, what, colour) under a unit, each its own artist with gid 'what l j'."""
    cx, cy = centre
    for k, (text, what, colour) in enumerate(lines):
        ax.text(cx, cy - _RADIUS - 0.06 - _LINE * k, text, ha="center", va="top",
                fontsize=_FONT_SIZE, color=colour or "black", bbox=_LABEL_BACKGROUND,
                gid=f"{what} {l} {j}")


def _above(ax, centre, lines, l, j, run_right):
    """Lines of (text, what, colour) over a unit, the first on top.

    Centred, or with ``run_right`` starting at the unit's centre and running
    right, so that labelled arrows coming in from the upper left pass beside
    them, not through them.
    """
    cx, cy = centre
    x, ha = (cx - 0.1, "left") if run_right else (cx, "center")
    for k, (text, what, colour) in enumerate(reversed(lines)):
        ax.text(x, cy + _RADIUS + 0.06 + _LINE * k, text, ha=ha, va="bottom",
                fontsize=_FONT_SIZE, color=colour or "black", bbox=_LABEL_BACKGROUND,
                gid=f"{what} {l} {j}")


def _direction(start, end):
    (x0, y0), (x1, y1) = start, end
    return np.subtract(end, start) / np.hypot(x1 - x0, y1 - y0)


def _arrow(ax, start, end):
    """An arrow from circle edge to circle edge."""
    ux, uy = _direction(start, end)
    ax.annotate("", xy=(end[0] - _RADIUS * ux, end[1] - _RADIUS * uy),
                xytext=(start[0] + _RADIUS * ux, start[1] + _RADIUS * uy),
                arrowprops=dict(arrowstyle="-|>", color="0.45", lw=1.0, shrinkA=0, shrinkB=0))


def _arrow_labels(ax, start, end, value, gradient, gid):
    """A weight's value over its arrow and its gradient (if any) under it, 40 % of the way along.

    Short of half way, the labels of arrows that meet at a unit stay apart,
    and clear of the labels over and under that unit.
    """
    ux, uy = _direction(start, end)
    angle = np.degrees(np.arctan2(uy, ux))
    # A level arrow meets no other at its ends: its labels can sit in the middle.
    along = 0.5 if abs(uy) < 0.05 else 0.4
    mx, my = start[0] + along * (end[0] - start[0]), start[1] + along * (end[1] - start[1])
    gap = 0.03
    lines = [(value, "w", "black", gap, "bottom")]
    if gradient is not None:
        lines.append((gradient, "grad w", _GRADIENT_COLOUR, -gap, "top"))
    for text, what, colour, offset, va in lines:
        # The offset is across the arrow, along its normal (-uy, ux).
        ax.text(mx - offset * uy, my + offset * ux, text, ha="center", va=va, rotation=angle,
                rotation_mode="anchor", fontsize=_WEIGHT_FONT_SIZE, color=colour, gid=f"{what} {gid}")


def _subscript(number):
    return str(number).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))
