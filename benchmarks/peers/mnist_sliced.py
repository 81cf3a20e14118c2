"""MNIST CNN, hand-optimised plain PyTorch: tensors sliced into batches, channels_last."""

import torch
import torch.nn.functional as F
from common import BATCH, MnistNet, Timer, accuracy, load_mnist, onecycle, parse_args, report

args = parse_args(__doc__)
torch.manual_seed(args.seed)
x_train, y_train, x_test, y_test = load_mnist(args.root)
x_train = x_train.contiguous(memory_format=torch.channels_last)
model = MnistNet().to(memory_format=torch.channels_last)
optimizer = torch.optim.Adam(model.parameters())
steps_per_epoch = -(-len(x_train) // BATCH)
scheduler = onecycle(optimizer, steps_per_epoch * args.epochs)
with Timer() as t:
    for _ in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x_train))
        for i in range(0, len(x_train), BATCH):
            idx = perm[i : i + BATCH]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
report(t.seconds, accuracy(model, x_test, y_test), len(x_train) * args.epochs)
