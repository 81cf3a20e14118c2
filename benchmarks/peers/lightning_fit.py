"""PyTorch Lightning's Trainer, as its users run it (fp32 defaults, DataLoader)."""

import tempfile

import lightning as L
import torch
import torch.nn.functional as F
from common import BATCH, Timer, accuracy, build_net, load, onecycle, parse_args, report
from torch.utils.data import DataLoader, TensorDataset


class LitModule(L.LightningModule):
    def __init__(self, net: torch.nn.Module, total_steps: int) -> None:
        super().__init__()
        self.net, self.total_steps = net, total_steps

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters())
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": onecycle(optimizer, self.total_steps), "interval": "step"},
        }


args = parse_args(__doc__)
L.seed_everything(args.seed, verbose=False)
x_train, y_train, x_test, y_test = load(args)
loader = DataLoader(TensorDataset(x_train, y_train), batch_size=BATCH[args.workload], shuffle=True)
model = LitModule(build_net(args.workload, x_train, y_train), len(loader) * args.epochs)
with tempfile.TemporaryDirectory() as tmp:
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="gpu" if args.device.startswith("cuda") else "cpu",
        devices=1,
        default_root_dir=tmp,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with Timer() as t:
        trainer.fit(model, loader)
report(t.seconds, accuracy(model.net, x_test, y_test), len(x_train) * args.epochs)
