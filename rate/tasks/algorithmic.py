"""The RMT paper's algorithmic tasks as deterministic, seeded sample generators.

Every sample is one token sequence z of length T+1; a model reads z[:-1] (T tokens) and predicts
z[1:]; the loss and the metrics use only the answer positions (the last ``answer_len`` targets).

* copy: ``X SEP X X`` (the source is copied twice), T = 3L, answer 2L.
* reverse: ``X SEP reversed(X)``, T = 2L, answer L.
* retrieval: ``k1 v1 .. k4 v4 q SEP v`` with distinct keys, T = 10, answer 1.
* sqeq: quadratic equations in 6 fixed-width slots: equation | canonical form | discriminant |
  root 1 | root 2 | answer, preceded by BOS; T = 6W, answer = the last 5 slots (5W targets).
  Scaled down from the paper (roots in [-100, 100), 30-character slots) to integer roots in
  [-max_root, max_root], leading coefficient in +-[1, max_coef], W = slot_width; every equation
  has real roots (the paper's 20 % without real roots are left out).

Train and test samples: for copy, reverse and retrieval the sample space (8^L sources; ordered
key sets, values and queries) is far larger than any training run, so train and test come from
two seed streams and share a sample only by chance (for copy at L = 8, under 1 % of the test
samples appear among the 96,000 that a 1500-step run of batch 64 trains on).  The
scaled-down sqeq has only 1,900 distinct equations (max_root 9, max_coef 5), which a run of 3000
batches of 32 sees about 50 times each: there the equations themselves are split, a fixed
``held_out`` fraction of them reserved for the test split (:func:`sqeq_problems`), so that no
test equation is ever trained on as written.  The split is by (roots, leading coefficient), not
by root pair: every root pair of the test split also occurs in training with other leading
coefficients (122 of 122 at the defaults), and everything after the canonical form depends on
the roots alone, so a test answer can be reached by dividing out the coefficient and recalling
that pair's continuation as well as by solving.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import torch

from rate.config import check_choices

PAD, SEP = 0, 1
SQEQ_CHARS = "0123456789+-*/^=()xD,"  # ids 2.. ; PAD pads the slots, SEP is BOS
SQEQ_SPLIT_SEED = 20221128  # fixes which equations are held out: the same for every run and seed
Split = Literal["train", "test"]


@dataclass
class TaskConfig:
    """Which task, and its size."""

    name: Literal["copy", "reverse", "retrieval", "sqeq"] = "reverse"
    length: int = 12  # copy/reverse source length L
    n_symbols: int = 8  # copy/reverse alphabet (chance per token = 1/n_symbols)
    n_pairs: int = 4  # retrieval key-value pairs
    n_keys: int = 26
    n_values: int = 10
    slot_width: int = 24  # sqeq characters per slot
    max_root: int = 9
    max_coef: int = 5
    held_out: float = 0.1  # sqeq: fraction of the distinct equations kept for the test split
    # sqeq: what the split holds out.  equation: (roots, leading coefficient), so a test root pair
    # is trained with other coefficients; roots: whole root pairs with every coefficient (a test
    # answer's continuation is then never trained on: solving, not recall).
    held_out_by: Literal["equation", "roots"] = "equation"

    def __post_init__(self) -> None:
        check_choices(self, "task.")
        for name in ("length", "n_symbols", "n_pairs", "n_keys", "n_values", "slot_width", "max_root", "max_coef"):
            if getattr(self, name) <= 0:
                raise ValueError(f"task.{name} must be positive, got {getattr(self, name)}")
        if self.n_pairs > self.n_keys:
            raise ValueError(f"n_pairs {self.n_pairs} exceeds the {self.n_keys} distinct keys")
        if not 0.0 < self.held_out < 1.0:
            raise ValueError(f"task.held_out must lie strictly between 0 and 1, got {self.held_out}")
        if self.name == "sqeq":
            train, test = sqeq_problems(self.max_root, self.max_coef, self.held_out, self.held_out_by)
            if not len(train) or not len(test):
                raise ValueError(f"task.held_out {self.held_out} leaves an empty split of the "
                                 f"{len(train) + len(test)} distinct equations")
            need = sqeq_line_width(self.max_root, self.max_coef)
            if need > self.slot_width:
                raise ValueError(f"slot_width {self.slot_width} is too small; sqeq lines need {need}")

    @property
    def vocab_size(self) -> int:
        if self.name in ("copy", "reverse"):
            return 2 + self.n_symbols
        if self.name == "retrieval":
            return 2 + self.n_values + self.n_keys
        return 2 + len(SQEQ_CHARS)

    @property
    def input_len(self) -> int:
        """T, the number of tokens the model reads."""
        return {
            "copy": 3 * self.length,
            "reverse": 2 * self.length,
            "retrieval": 2 * self.n_pairs + 2,
            "sqeq": 6 * self.slot_width,
        }[self.name]

    @property
    def answer_len(self) -> int:
        return {"copy": 2 * self.length, "reverse": self.length, "retrieval": 1, "sqeq": 5 * self.slot_width}[
            self.name
        ]

    @property
    def prompt_len(self) -> int:
        """Tokens given before free-running generation starts (the rest is generated)."""
        return self.input_len - self.answer_len + 1

    @property
    def chance(self) -> float:
        """Per-token accuracy of guessing uniformly among plausible answer tokens."""
        if self.name in ("copy", "reverse"):
            return 1.0 / self.n_symbols
        if self.name == "retrieval":
            return 1.0 / self.n_values
        return float("nan")


def generate(task: TaskConfig, n: int, seed: int, split: Split = "train") -> torch.Tensor:
    """n samples (n, T+1) int64, a pure function of (task, n, seed, split).  sqeq draws its
    equations from the split's own set (:func:`sqeq_problems`); the other tasks ignore ``split``
    (their train and test streams differ by seed)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rng = np.random.default_rng(seed)
    if task.name in ("copy", "reverse"):
        x = rng.integers(2, 2 + task.n_symbols, size=(n, task.length))
        answer = np.concatenate([x, x], 1) if task.name == "copy" else x[:, ::-1]
        z = np.concatenate([x, np.full((n, 1), SEP), answer], 1)
    elif task.name == "retrieval":
        keys = np.argsort(rng.random((n, task.n_keys)), axis=1)[:, : task.n_pairs] + 2 + task.n_values
        values = rng.integers(2, 2 + task.n_values, size=(n, task.n_pairs))
        which = rng.integers(0, task.n_pairs, size=n)
        pairs = np.stack([keys, values], 2).reshape(n, -1)
        rows = np.arange(n)
        z = np.concatenate(
            [pairs, keys[rows, which][:, None], np.full((n, 1), SEP), values[rows, which][:, None]], 1
        )
    else:
        problems = sqeq_problems(task.max_root, task.max_coef, task.held_out, task.held_out_by)[split == "test"]
        picks = problems[rng.integers(0, len(problems), size=n)]
        z = np.stack([_sqeq_sample(task, *map(int, p)) for p in picks])
    return torch.from_numpy(np.ascontiguousarray(z)).long()


def _fmt_poly(a: int, b: int, c: int) -> str:
    def term(coef: int, var: str, first: bool) -> str:
        if coef == 0:
            return ""
        sign = "-" if coef < 0 else ("" if first else "+")
        mag = abs(coef)
        if not var:
            return f"{sign}{mag}"
        return f"{sign}{var}" if mag == 1 else f"{sign}{mag}*{var}"

    return term(a, "x^2", True) + term(b, "x", False) + term(c, "", False) + "=0"


def _sqeq_lines(x1: int, x2: int, alpha: int) -> list[str]:
    """Equation, canonical form, discriminant, two root lines and the answer for roots x1, x2."""
    p, q = -(x1 + x2), x1 * x2
    disc = p * p - 4 * q
    r = abs(x1 - x2)
    q_txt = f"({q})" if q < 0 else str(q)
    lo, hi = sorted((x1, x2))
    return [
        _fmt_poly(alpha, alpha * p, alpha * q),
        _fmt_poly(1, p, q),
        f"D={abs(p)}^2-4*{q_txt}={disc}={r}^2",
        f"x=({-p}-{r})/2={lo}",
        f"x=({-p}+{r})/2={hi}",
        f"{lo},{hi}",
    ]


@lru_cache(maxsize=8)
def _all_sqeq_problems(max_root: int, max_coef: int) -> np.ndarray:
    """Every distinct equation as (n, 3) int64 rows (low root, high root, leading coefficient).
    The roots are unordered: (x1, x2) and (x2, x1) write the same six lines."""
    roots = range(-max_root, max_root + 1)
    alphas = [a for a in range(-max_coef, max_coef + 1) if a]
    problems = np.array([(lo, hi, a) for lo in roots for hi in roots if hi >= lo for a in alphas], dtype=np.int64)
    problems.setflags(write=False)  # cached and shared: nobody may change it
    return problems


@lru_cache(maxsize=8)
def sqeq_problems(max_root: int, max_coef: int, held_out: float,
                  by: str = "equation") -> tuple[np.ndarray, np.ndarray]:
    """The distinct equations split into (train, test), each (n, 3) as :func:`_all_sqeq_problems`.
    A fixed shuffle (the same for every run and seed) puts round(held_out * n) of the units, at
    least one, in the test split: equations (``by="equation"``), or root pairs with all their
    equations (``by="roots"``)."""
    if by not in ("equation", "roots"):
        raise ValueError(f"held_out_by must be 'equation' or 'roots', got {by!r}")
    problems = _all_sqeq_problems(max_root, max_coef)
    units = problems if by == "equation" else np.unique(problems[:, :2], axis=0)
    order = np.random.default_rng(SQEQ_SPLIT_SEED).permutation(len(units))
    n_test = max(1, round(held_out * len(units)))
    if by == "equation":
        in_test = np.zeros(len(problems), dtype=bool)
        in_test[order[:n_test]] = True
    else:
        held = {tuple(map(int, pair)) for pair in units[order[:n_test]]}
        in_test = np.array([(int(lo), int(hi)) in held for lo, hi, _ in problems])
    train, test = problems[~in_test], problems[in_test]
    train.setflags(write=False)
    test.setflags(write=False)
    return train, test


@lru_cache(maxsize=8)
def sqeq_line_width(max_root: int, max_coef: int) -> int:
    """Characters in the longest of all equations' lines: the slot width they need."""
    return max(len(line) for p in _all_sqeq_problems(max_root, max_coef) for line in _sqeq_lines(*map(int, p)))


def _sqeq_sample(task: TaskConfig, x1: int, x2: int, alpha: int) -> np.ndarray:
    z = np.full(6 * task.slot_width + 1, PAD, dtype=np.int64)
    z[0] = SEP
    for i, line in enumerate(_sqeq_lines(x1, x2, alpha)):
        ids = [2 + SQEQ_CHARS.index(ch) for ch in line]
        z[1 + i * task.slot_width : 1 + i * task.slot_width + len(ids)] = ids
    return z


def decode_sqeq(tokens: torch.Tensor | list[int]) -> str:
    """Characters of sqeq token ids (PAD shown as '.', BOS as '|'), for inspection."""
    out = []
    for t in (tokens.tolist() if isinstance(tokens, torch.Tensor) else tokens):
        out.append("." if t == PAD else "|" if t == SEP else SQEQ_CHARS[t - 2])
    return "".join(out)


def context_guess_accuracy(task: TaskConfig, z: torch.Tensor) -> float:
    """Retrieval's plateau: the expected accuracy of answering the most frequent value among the
    context's pairs (a tie broken at random), which needs no key-value binding.  z (B, T+1)."""
    if task.name != "retrieval":
        raise ValueError(f"the context-guess level is defined for retrieval, not {task.name}")
    values = z[:, 1 : 2 * task.n_pairs : 2]  # (B, n_pairs)
    counts = (values[:, :, None] == values[:, None, :]).sum(-1)  # (B, n_pairs): each value's frequency
    top = counts == counts.max(1, keepdim=True).values
    answer_is_top = (top & (values == z[:, -1:])).any(1)
    n_top_values = (top.float() / counts.float()).sum(1)  # distinct values sharing the top count
    return (answer_is_top.float() / n_top_values).mean().item()


def answer_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """pred, target: (B, A) answer tokens -> per-token accuracy and whole-answer exact match."""
    correct = pred == target
    return {"token_acc": correct.float().mean().item(), "exact": correct.all(1).float().mean().item()}
