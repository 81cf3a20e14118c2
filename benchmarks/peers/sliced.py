"""Hand-optimised plain PyTorch: tensors sliced into batches, channels_last for conv nets.

With --bf16 --epochs 1 on the mnist workload it is the plain script the performance issue sets
configs/mnist_fast.yaml against (bf16 autocast, Adam + one-cycle, batch 128, one epoch).
"""

import contextlib

import torch
import torch.nn.functional as F
from common import BATCH, Timer, accuracy, build_net, load, onecycle, parse_args, report

args = parse_args(__doc__)
torch.manual_seed(args.seed)
x_train, y_train, x_test, y_test = load(args)
model = build_net(args.workload, x_train, y_train).to(args.device)
x_train, y_train = x_train.to(args.device), y_train.to(args.device)  # the whole set on the device
if x_train.ndim == 4:  # images
    x_train = x_train.contiguous(memory_format=torch.channels_last)
    model = model.to(memory_format=torch.channels_last)
optimizer = torch.optim.Adam(model.parameters())
batch = BATCH[args.workload]
steps_per_epoch = -(-len(x_train) // batch)
scheduler = onecycle(optimizer, steps_per_epoch * args.epochs)
precision = (
    torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()
)
with Timer() as t:
    for _ in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x_train), device=x_train.device)
        for i in range(0, len(x_train), batch):
            idx = perm[i : i + batch]
            with precision:
                loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
report(t.seconds, accuracy(model, x_test, y_test), len(x_train) * args.epochs)
