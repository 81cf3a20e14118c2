"""MNIST CNN through Keras 3 on the torch backend (model.fit), as its users run it."""

import math
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import BATCH, PEAK_LR, WARMUP, Timer, load_mnist, parse_args, report  # noqa: E402


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


args = parse_args(__doc__)
keras.utils.set_random_seed(args.seed)
x_train, y_train, x_test, y_test = load_mnist(args.root)
to_nhwc = lambda x: np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())  # noqa: E731 (Keras is NHWC)
x_train, x_test, y_train, y_test = to_nhwc(x_train), to_nhwc(x_test), y_train.numpy(), y_test.numpy()
model = keras.Sequential(
    [
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(24, 5, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(10),
    ]
)
steps = math.ceil(len(x_train) / BATCH) * args.epochs
model.compile(
    optimizer=keras.optimizers.Adam(OneCycle(steps)),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
with Timer() as t:
    model.fit(x_train, y_train, batch_size=BATCH, epochs=args.epochs, verbose=0)
_, test_accuracy = model.evaluate(x_test, y_test, batch_size=1000, verbose=0)
report(t.seconds, float(test_accuracy), len(x_train) * args.epochs)
