"""Plain PyTorch as the textbook writes it: TensorDataset + DataLoader, fp32, NCHW."""

import torch
import torch.nn.functional as F
from common import BATCH, Timer, accuracy, build_net, load, onecycle, parse_args, report
from torch.utils.data import DataLoader, TensorDataset

args = parse_args(__doc__)
torch.manual_seed(args.seed)
x_train, y_train, x_test, y_test = load(args)
loader = DataLoader(TensorDataset(x_train, y_train), batch_size=BATCH[args.workload], shuffle=True)
model = build_net(args.workload, x_train, y_train).to(args.device)
optimizer = torch.optim.Adam(model.parameters())
scheduler = onecycle(optimizer, len(loader) * args.epochs)
with Timer() as t:
    for _ in range(args.epochs):
        model.train()
        for x, y in loader:
            x, y = x.to(args.device), y.to(args.device)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
report(t.seconds, accuracy(model, x_test, y_test), len(x_train) * args.epochs)
