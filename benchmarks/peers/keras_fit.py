"""Keras 3 on the torch backend (model.fit), as its users run it."""

import math
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import BATCH, PEAK_LR, WARMUP, Timer, load, parse_args, report  # noqa: E402


class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """The same one-cycle schedule as the other variants (warmup from PEAK_LR/25, cosine down)."""

    def __init__(self, total_steps: int) -> None:
        self.total, self.warm = total_steps, int(WARMUP * total_steps)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        up = PEAK_LR / 25 + (PEAK_LR - PEAK_LR / 25) * step / self.warm
        progress = (step - self.warm) / (self.total - self.warm)
        down = PEAK_LR / 25e4 + (PEAK_LR - PEAK_LR / 25e4) * 0.5 * (1 + keras.ops.cos(math.pi * progress))
        return keras.ops.where(step < self.warm, up, down)


def network(workload: str, x: np.ndarray, classes: int) -> keras.Sequential:
    """The same networks as common.py's, in Keras layers (images are NHWC in Keras)."""
    if workload == "text":
        return keras.Sequential(
            [
                keras.Input((x.shape[1],), dtype="int64"),
                keras.layers.Embedding(int(x.max()) + 1, 64, mask_zero=True),
                keras.layers.LSTM(128),
                keras.layers.Dense(classes),
            ]
        )
    convs = [(24, 5, "valid"), (32, 3, "valid")] if workload == "mnist" else [(32, 3, "same"), (64, 3, "same")]
    layers: list = [keras.Input(x.shape[1:])]
    for width, kernel, padding in convs:
        layers += [keras.layers.Conv2D(width, kernel, padding=padding, activation="relu"), keras.layers.MaxPooling2D(2)]
    hidden = 256 if workload == "mnist" else 128
    layers += [keras.layers.Flatten(), keras.layers.Dense(hidden, activation="relu"), keras.layers.Dense(classes)]
    return keras.Sequential(layers)


args = parse_args(__doc__)
keras.utils.set_random_seed(args.seed)
x_train, y_train, x_test, y_test = load(args)
if x_train.ndim == 4:
    to_nhwc = lambda x: np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())  # noqa: E731
    x_train, x_test = to_nhwc(x_train), to_nhwc(x_test)
else:
    x_train, x_test = x_train.numpy(), x_test.numpy()
y_train, y_test = y_train.numpy(), y_test.numpy()
model = network(args.workload, x_train, int(y_train.max()) + 1)
batch = BATCH[args.workload]
steps = math.ceil(len(x_train) / batch) * args.epochs
model.compile(
    optimizer=keras.optimizers.Adam(OneCycle(steps)),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
with Timer() as t:
    model.fit(x_train, y_train, batch_size=batch, epochs=args.epochs, verbose=0)
_, test_accuracy = model.evaluate(x_test, y_test, batch_size=1000, verbose=0)
report(t.seconds, float(test_accuracy), len(x_train) * args.epochs)
