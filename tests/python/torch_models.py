"""Small models for the fsps.torch tests: a CNN (two conv layers, two
linear layers, batch norm optional) and a transformer language model
(embedding, attention blocks, layer norm, tied output optional)."""
import torch
from torch import nn


class CNN(nn.Module):
    """Fashion-MNIST's shape at a small scale: 1x12x12 in, 10 classes."""

    def __init__(self, batch_norm=False, width=4):
        super().__init__()
        norm = [nn.BatchNorm2d(width)] if batch_norm else []
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), *norm, nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.fc1 = nn.Linear(2 * width * 9, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(self.features(x))))


class Block(nn.Module):
    """Pre-norm attention block: LN, causal self-attention, LN, MLP."""

    def __init__(self, d, heads):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        # No projection biases: the key bias gets a gradient that is zero
        # in exact arithmetic, rounding noise in floats, which Adam scales
        # up to lr-sized steps: no two summation orders could agree on it.
        self.attn = nn.MultiheadAttention(d, heads, bias=False,
                                          batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(),
                                 nn.Linear(4 * d, d))

    def forward(self, x):
        t = x.shape[1]
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class TinyLM(nn.Module):
    """A character language model: embedding, learned positions, blocks,
    final layer norm, output head (tied to the embedding, or not)."""

    def __init__(self, vocab, d=16, heads=2, layers=2, context=16,
                 tied=False):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(1, context, d))
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        if tied:
            self.head.weight = self.embed.weight

    def forward(self, idx):
        x = self.embed(idx) + self.pos[:, :idx.shape[1]]
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))
