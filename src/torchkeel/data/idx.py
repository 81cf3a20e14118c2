"""The IDX files of the MNIST family (MNIST, Fashion-MNIST, KMNIST), read without torchvision.

The format (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, a type byte
(0x08: unsigned bytes, the only type these sets use), the number of dimensions, each dimension
as a big-endian int32, then the values in C order. Reading it takes a few lines; importing
torchvision to read it costs ~1.3 s on 2 CPU cores (it imports torch._dynamo through
torchvision.ops), a quarter of the whole `keel train configs/mnist_fast.yaml` process.
torchvision still does the downloading (``data.download: true``) and every other set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from torchkeel.errors import DataError

UBYTE = 0x08

# torchvision's layout: ROOT/<Class>/raw/<file>, decompressed
FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array in an IDX file with ``ndim`` dimensions; DataError naming the file when
    its header or size is not that (a truncated download, another file under that name)."""
    data = path.read_bytes()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != UBYTE or data[3] != ndim:
        raise DataError(f"{path}: not an IDX file of {ndim}-dimensional unsigned bytes (bad header)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    size = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != size:
        raise DataError(
            f"{path}: IDX header says {'x'.join(map(str, shape))} = {size:,} bytes of values, "
            f"the file holds {len(data) - header:,}: truncated or not this file"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_split(folder: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) uint8 images and (N,) uint8 labels of the train or the test split."""
    images_file, labels_file = FILES[train]
    images, labels = read_idx(folder / images_file, 3), read_idx(folder / labels_file, 1)
    if len(images) != len(labels):
        counts = f"{len(images):,} images in {images_file} but {len(labels):,} labels in {labels_file}"
        raise DataError(f"{folder}: {counts}")
    return images, labels
