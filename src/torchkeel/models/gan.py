"""DCGAN (Radford, Metz & Chintala 2015): a generator and a discriminator sized from the DataSpec.

The generator maps noise z (B, latent) to images in [-1, 1] (tanh); the GAN loop
(``torchkeel.train.gan``) maps the data's normalised images to the same range. Both networks
double or halve the side per stride-2 4x4 (transposed) convolution, from a start side s with
side = s * 2^k: 8 px = 2 * 2^2, 28 px = 7 * 2^2, 32 px = 4 * 2^3. Class-conditional with
``conditional: true``: the generator gets a label embedding added to z, the discriminator a
projection term (Miyato & Koyama 2018, "cGANs with projection discriminator").
"""

from __future__ import annotations

import torch
from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.errors import ConfigError
from torchkeel.models.cnn import image_shape
from torchkeel.models.layers import Width

MAX_DOUBLINGS = 3  # 32 px starts from 4x4, as DCGAN's 64 px starts from 4x4 after 4


def dcgan(spec: DataSpec, *, latent_dim: Width = 64, width: Width = 64, conditional: bool = False) -> nn.Module:
    """DCGAN generator + discriminator for 8-32 px images, own GAN loop; optionally class-conditional.

    ``width`` is the channels of the largest generator feature map (and of the
    discriminator's first layer); each step towards the small end doubles it.
    """
    c, h, w = image_shape(spec, "dcgan")
    if h != w:
        raise ConfigError(f"dcgan needs square images; data '{spec.name}' has {h}x{w}")
    start, doublings = start_side(h)
    if doublings == 0:
        raise ConfigError(f"dcgan needs an even image side of at least 4 px; data '{spec.name}' has {h}x{w}")
    classes = spec.num_classes if conditional else 0
    if conditional and classes < 2:
        raise ConfigError(f"dcgan conditional: true needs class labels; data '{spec.name}' has none")
    generator = Generator(c, start, doublings, latent_dim, width, classes)
    discriminator = Discriminator(c, start, doublings, width, classes)
    gan = GAN(generator, discriminator, latent_dim, classes)
    gan.apply(dcgan_init)
    return gan


def start_side(side: int) -> tuple[int, int]:
    """(s, k) with side = s * 2^k: halve while even, down to 2 px, at most MAX_DOUBLINGS times."""
    k = 0
    while side % 2 == 0 and side // 2 >= 2 and k < MAX_DOUBLINGS:
        side, k = side // 2, k + 1
    return side, k


def dcgan_init(module: nn.Module) -> None:
    """DCGAN section 4: all weights from N(0, 0.02); BatchNorm gains from N(1, 0.02)."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """z (B, latent) -> linear -> (B, width*2^(k-1), s, s) -> k transposed convs -> (B, C, H, W) in [-1, 1]."""

    def __init__(self, channels: int, start: int, doublings: int, latent: int, width: int, classes: int):
        super().__init__()
        self.start = start
        self.c0 = width * 2 ** (doublings - 1)
        self.label = nn.Embedding(classes, latent) if classes else None
        self.project = nn.Sequential(nn.Linear(latent, self.c0 * start * start, bias=False))
        self.norm0 = nn.Sequential(nn.BatchNorm2d(self.c0), nn.ReLU(inplace=True))
        ups: list[nn.Module] = []
        c = self.c0
        for _ in range(doublings - 1):
            ups += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(inplace=True)]
            c //= 2
        ups += [nn.ConvTranspose2d(c, channels, 4, 2, 1), nn.Tanh()]
        self.ups = nn.Sequential(*ups)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.label is not None:
            if labels is None:
                raise ValueError("this generator is class-conditional: give labels")
            z = z + self.label(labels)
        h = self.project(z).view(len(z), self.c0, self.start, self.start)
        return self.ups(self.norm0(h))


class Discriminator(nn.Module):
    """(B, C, H, W) -> k stride-2 convs (LeakyReLU 0.2, BatchNorm but on the first) -> one logit (B,)."""

    def __init__(self, channels: int, start: int, doublings: int, width: int, classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        c_in, c = channels, width
        for i in range(doublings):
            layers.append(nn.Conv2d(c_in, c, 4, 2, 1, bias=i == 0))
            if i > 0:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c_in, c = c, c * 2
        self.features = nn.Sequential(*layers, nn.Flatten())  # (B, c_in * s * s)
        self.out = nn.Linear(c_in * start * start, 1)
        self.label = nn.Embedding(classes, c_in * start * start) if classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)
        logit = self.out(h).view(-1)
        if self.label is not None:
            if labels is None:
                raise ValueError("this discriminator is class-conditional: give labels")
            logit = logit + (self.label(labels) * h).sum(1)  # projection: <embed(y), features>
        return logit


class GAN(nn.Module):
    """Holds both networks; ``forward(z, labels)`` generates, ``sample(n)`` draws noise and generates."""

    def __init__(self, generator: Generator, discriminator: Discriminator, latent_dim: int, classes: int):
        super().__init__()
        self.generator, self.discriminator = generator, discriminator
        self.latent_dim, self.classes = latent_dim, classes

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z, labels)

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = next(self.parameters()).device
        return torch.randn(n, self.latent_dim, generator=generator, device="cpu").to(device)

    def grid_labels(self, n: int) -> torch.Tensor | None:
        """Labels 0, 1, 2, ... repeated: a sample grid of 8 or 10 columns shows one class per column."""
        if not self.classes:
            return None
        return (torch.arange(n) % self.classes).to(next(self.parameters()).device)

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``n`` images (n, C, H, W) in [-1, 1], with the generator in eval mode."""
        was_training = self.generator.training
        self.generator.eval()
        labels = labels if labels is not None else self.grid_labels(n)
        images = self.generator(self.noise(n, generator), labels)
        self.generator.train(was_training)
        return images
