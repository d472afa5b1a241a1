"""Experiment config, model construction and evaluation for the algorithmic tasks."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from rate.tasks.algorithmic import TaskConfig, answer_metrics, context_guess_accuracy, generate
from rate.core.lm import RecurrentLM
from rate.core.rmt import RMTConfig
from rate.training import TrainConfig

CHECKPOINT_KIND = "algorithmic"
PLATEAU_MARGIN = 0.1  # retrieval has left its plateau once accuracy beats the context guess by this
#                       (about 3 standard errors of an accuracy on the 256 samples of an evaluation)
TEST_SEED_OFFSET = 1_000_003  # test samples come from a seed stream disjoint from training


@dataclass
class AlgorithmicConfig:
    """One algorithmic-task run: the task, the model, how many segments the input is cut into."""

    task: TaskConfig = field(default_factory=TaskConfig)
    model: RMTConfig = field(default_factory=RMTConfig)
    segments: int = 1
    eval_samples: int = 512  # held-out samples of the final evaluation
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.segments <= 0:
            raise ValueError(f"segments must be positive, got {self.segments}")
        if self.model.cache_position == "contiguous" and self.model.num_mem_tokens and self.model.mem_len:
            raise ValueError("model.cache_position 'contiguous' runs in the full-segment forward only; generation "
                             "decodes step by step (the official layout)")
        if self.eval_samples <= 0:
            raise ValueError(f"eval_samples must be positive, got {self.eval_samples}")
        if self.task.input_len % self.segments:
            raise ValueError(
                f"the {self.task.name} input of {self.task.input_len} tokens does not split into "
                f"{self.segments} equal segments"
            )

    @property
    def segment_len(self) -> int:
        return self.task.input_len // self.segments


def build_model(cfg: AlgorithmicConfig) -> RecurrentLM:
    return RecurrentLM(cfg.task.vocab_size, cfg.segment_len, cfg.model, emb_dropout=cfg.model.dropout)


def answer_loss(logits: torch.Tensor, z: torch.Tensor, answer_len: int) -> torch.Tensor:
    """Cross-entropy over the answer positions only. logits (B, T, V), z (B, T+1)."""
    return F.cross_entropy(logits[:, -answer_len:].flatten(0, 1), z[:, -answer_len:].flatten())


@torch.no_grad()
def evaluate(model: RecurrentLM, task: TaskConfig, n_samples: int, seed: int, batch_size: int = 256) -> dict[str, float]:
    """Metrics on ``n_samples`` samples of the test split drawn from ``seed``.

    gen_token_acc: per-token accuracy of free-running greedy generation on the answer (the
    RMT paper's Fig. 3-4 metric for copy, reverse and retrieval; for sqeq it counts the answer
    slot's padding too, which the paper leaves out, so there answer_acc is the metric);
    answer_acc: fraction of samples whose final answer is generated
    exactly (the whole answer; for sqeq the answer slot, the paper's Table 1 metric);
    tf_token_acc: teacher-forced per-token accuracy on the answer; loss: answer cross-entropy;
    retrieval only, context_guess_acc: the same samples' plateau level
    (:func:`rate.tasks.algorithmic.context_guess_accuracy`).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    z_all = generate(task, n_samples, seed + TEST_SEED_OFFSET, split="test").to(device)
    sums = {"gen_token_acc": 0.0, "answer_acc": 0.0, "tf_token_acc": 0.0, "loss": 0.0}
    a = task.answer_len
    exact_span = task.slot_width if task.name == "sqeq" else a
    for z in z_all.split(batch_size):
        logits, _ = model(z[:, :-1])
        sums["loss"] += answer_loss(logits, z, a).item() * len(z)
        sums["tf_token_acc"] += (logits[:, -a:].argmax(-1) == z[:, -a:]).float().mean().item() * len(z)
        gen = model.generate_greedy(z[:, : task.prompt_len], task.input_len)
        sums["gen_token_acc"] += answer_metrics(gen[:, -a:], z[:, -a:])["token_acc"] * len(z)
        sums["answer_acc"] += answer_metrics(gen[:, -exact_span:], z[:, -exact_span:])["exact"] * len(z)
    model.train(was_training)
    metrics = {k: v / len(z_all) for k, v in sums.items()}
    if task.name == "retrieval":
        metrics["context_guess_acc"] = context_guess_accuracy(task, z_all)
    return metrics


def left_plateau(metrics: dict[str, float]) -> bool:
    """Whether an evaluation's accuracy is clearly above retrieval's context-guess plateau."""
    return metrics["gen_token_acc"] > metrics["context_guess_acc"] + PLATEAU_MARGIN
