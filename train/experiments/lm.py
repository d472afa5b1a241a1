"""Experiment config, model and stream evaluation for character-level language modelling."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from rate.core.lm import RecurrentLM
from rate.tasks.lm_data import VOCAB_SIZE
from rate.tasks.lm_stream import OrderedStream
from rate.core.rmt import RMTConfig
from rate.training import TrainConfig

CHECKPOINT_KIND = "lm"


@dataclass
class LMExperimentConfig:
    """One language-modelling run on the prepared byte-level corpus."""

    model: RMTConfig = field(default_factory=lambda: RMTConfig(bptt_depth=0))
    segment_len: int = 64
    data_dir: str = "data/shakespeare"
    eval_batch_size: int = 16
    valid_segments: int = 100  # segments of the valid stream read at each periodic evaluation (0 = all)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.segment_len <= 0 or self.eval_batch_size <= 0 or self.valid_segments < 0:
            raise ValueError("segment_len and eval_batch_size must be positive, valid_segments >= 0")
        if self.model.bptt_depth < 0:
            raise ValueError(
                "stream training needs a finite model.bptt_depth (k >= 0): each step back-propagates "
                "through the current segment and the k before it"
            )


def build_lm(cfg: LMExperimentConfig) -> RecurrentLM:
    return RecurrentLM(VOCAB_SIZE, cfg.segment_len, cfg.model, emb_dropout=cfg.model.dropout)


# Segment positions counted as the segment's start in the bpc split: where a Transformer-XL
# cache holds the exact preceding characters and memory tokens hold only a summary.
HEAD_POSITIONS = 8


@torch.no_grad()
def evaluate_stream(model: RecurrentLM, stream: OrderedStream, max_segments: int = 0, progress: bool = False,
                    head: int = HEAD_POSITIONS) -> dict:
    """Read the stream in order carrying memory and cache; bits per character over every target.

    The targets are those of ``stream``'s whole segments: :class:`OrderedStream` leaves out the
    split's last (length mod B) characters and each row's last partial segment (under 0.4 % of
    the test split at the shipped B = 16, S = 64: tests/test_lm.py), which Transformer-XL's
    evaluation scores as a shorter segment.

    Returns {"bpc", "loss" (nats per character), "tokens", "bpc_head" (the first ``head``
    positions of every segment), "bpc_tail" (the rest; each None when it has no position),
    "bpc_by_position" (one per position)}.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n = len(stream) if max_segments <= 0 else min(max_segments, len(stream))
    state = model.decoder.initial_state(stream.rows.shape[0])
    sums = torch.zeros(stream.segment_len, dtype=torch.float64)  # summed loss per position in the segment
    counts = torch.zeros(stream.segment_len, dtype=torch.float64)
    for i in tqdm(range(n), desc="eval", disable=not progress, leave=False):
        x, y = (t.to(device) for t in stream.segment(i))
        logits, state = model.forward_segment(x, state)
        loss = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")  # (B, S)
        sums[: y.shape[1]] += loss.sum(0).double().cpu()
        counts[: y.shape[1]] += y.shape[0]
    model.train(was_training)

    if not counts.sum():
        raise ValueError("the stream has no segment to evaluate")

    def bits(part: slice) -> float | None:  # None for no position (a head of the whole segment)
        n = counts[part].sum()
        return float(sums[part].sum() / n / math.log(2)) if n else None

    loss = float(sums.sum() / counts.sum())
    head = max(0, min(head, stream.segment_len))
    return {"bpc": loss / math.log(2), "loss": loss, "tokens": int(counts.sum()),
            "bpc_head": bits(slice(0, head)), "bpc_tail": bits(slice(head, None)),
            "bpc_by_position": (sums / counts.clamp(min=1) / math.log(2)).tolist()}
