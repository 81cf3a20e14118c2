"""The classic tutorial CNN, written as a user writes it, trained through torchkeel.fit.

A plain ``nn.Module`` with its own ``forward``; the only torchkeel-specific lines are loading
the data and calling ``fit``. Run: python examples/tutorial_cnn.py
"""

import torch
import torch.nn.functional as F
from torch import nn

import torchkeel as keel


class TutorialCNN(nn.Module):
    """conv(1->16, 3x3) -> relu -> pool -> conv(16->32, 3x3) -> relu -> pool -> fc -> fc."""

    def __init__(self, in_channels: int, height: int, width: int, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        # two 2x2 poolings halve each side twice: the flattened size follows the input
        self.fc1 = nn.Linear(32 * (height // 4) * (width // 4), 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))  # (B, 16, H/2, W/2)
        x = self.pool(F.relu(self.conv2(x)))  # (B, 32, H/4, W/4)
        x = torch.flatten(x, 1)
        return self.fc2(F.relu(self.fc1(x)))  # (B, num_classes) logits


def main() -> None:
    data = keel.data.load("digits")  # 8x8 grey digits, split and normalised
    c, h, w = data.spec.input_shape
    torch.manual_seed(0)
    model = TutorialCNN(c, h, w, data.spec.num_classes)
    run = keel.fit(model, data, epochs=10, optimizer="sgd", lr=0.05, momentum=0.9, schedule="cosine")
    result = run.evaluate("test")
    print(f"test accuracy {result['accuracy']:.4f}  loss {result['loss']:.4f}")


if __name__ == "__main__":
    main()
