"""The IMDB Large Movie Review Dataset (aclImdb v1) as Keras-style integer sequences.

Reads the dataset's tarball from disk -- the labelled-only ``aclImdb_v1_labelled.tar.xz``
or the official ``aclImdb_v1.tar.gz`` (any compression ``tarfile`` opens), or an
already extracted ``aclImdb`` folder -- and never downloads anything.  Where the file
is:

1. the ``path`` argument of :func:`load_data` / :func:`get_word_index`, else
2. the environment variable ``FUSEDRNN_IMDB``.

Either may name the tarball itself, an extracted ``aclImdb`` folder, or a folder holding
one of those.

Tokenisation is Keras' (``text_to_word_sequence`` with its default filters): lowercase,
the characters ``!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~`` plus tab and newline become spaces
(so ``<br />`` becomes the word ``br``; apostrophes stay), split on whitespace.  Words are
ranked by their frequency in the *train* split (rank 1 = most frequent; ties broken
alphabetically); a word's index is ``rank + index_from``; 0 is padding, ``start_char``
(1) starts every review and ``oov_char`` (2) stands for any word outside the vocabulary --
including test words never seen in train.  With this the train split reproduces Keras'
published figures: mean length 238.71 (start token included), max 2494.

Parsing the 18 MB tarball takes ~13 s of CPU (5 s reading and xz decompression, 8 s
tokenising and ranking); the tokenised result is cached as one ``.npz`` under
``$FUSEDRNN_CACHE_DIR`` (default ``$XDG_CACHE_HOME/fusedrnn`` or ``~/.cache/fusedrnn``),
keyed by the file's absolute path, size and modification time, so later loads take ~1 s
(building Keras' Python lists).  Pass ``cache=False`` to bypass it.
"""
from __future__ import annotations

import hashlib
import os
import tarfile
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

__all__ = ["ENV_VAR", "CACHE_ENV_VAR", "FILENAMES", "tokenize", "find_dataset", "load_data",
           "get_word_index"]

ENV_VAR = "FUSEDRNN_IMDB"
CACHE_ENV_VAR = "FUSEDRNN_CACHE_DIR"
# Names looked for inside a folder, in this order.
FILENAMES = ("aclImdb_v1_labelled.tar.xz", "aclImdb_v1.tar.gz", "aclImdb_v1.tar")

# Keras' default `filters` of text_to_word_sequence: each becomes a space.
_KERAS_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'
_TRANSLATION = str.maketrans({ch: " " for ch in _KERAS_FILTERS})
_SPLITS = ("train", "test")
# Bump when tokenisation or the cache layout changes: old cache files are then ignored.
_CACHE_FORMAT = 1


def tokenize(text: str) -> List[str]:
    """Split one review into words exactly as :func:`load_data` does."""
    return text.lower().translate(_TRANSLATION).split()


# --------------------------------------------------------------------------- locating


def _missing_file_error(detail: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{detail}. fusedrnn never downloads data: pass path= (the aclImdb tarball "
        f"{FILENAMES[0]!r} or the official {FILENAMES[1]!r}, an extracted 'aclImdb' folder, "
        f"or a folder holding one of them) or set the environment variable {ENV_VAR} to it. "
        "The official tarball is at https://ai.stanford.edu/~amaas/data/sentiment/."
    )


def find_dataset(path=None) -> Path:
    """Resolve where the dataset is: ``path``, else ``$FUSEDRNN_IMDB``.

    Returns the tarball or the extracted ``aclImdb`` folder; raises FileNotFoundError
    saying what to pass when there is nothing usable."""
    if path is None:
        path = os.environ.get(ENV_VAR) or None
        if path is None:
            raise _missing_file_error(f"no IMDB dataset given (path=None and ${ENV_VAR} unset)")
        origin = f"${ENV_VAR}={path!r}"
    else:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
        origin = f"path={os.fspath(path)!r}"
    candidate = Path(path).expanduser()
    if candidate.is_file():
        return candidate
    if candidate.is_dir():
        if _is_extracted_root(candidate):
            return candidate
        if _is_extracted_root(candidate / "aclImdb"):
            return candidate / "aclImdb"
        for name in FILENAMES:
            if (candidate / name).is_file():
                return candidate / name
        raise _missing_file_error(
            f"{origin} is a folder without {' / '.join(FILENAMES)} or an extracted aclImdb")
    raise _missing_file_error(f"{origin} does not exist")


def _is_extracted_root(folder: Path) -> bool:
    return all((folder / split / label).is_dir() for split in _SPLITS for label in ("pos", "neg"))


# --------------------------------------------------------------------------- parsing


def _review_key(split: str, label: str, filename: str) -> Optional[Tuple[str, int, int]]:
    """(split, label 0/1, review id) for ``<split>/<pos|neg>/<id>_<rating>.txt``, else None."""
    if split not in _SPLITS or label not in ("pos", "neg") or not filename.endswith(".txt"):
        return None
    stem = filename[:-4].split("_")[0]
    if not stem.isdigit():
        return None
    return split, int(label == "pos"), int(stem)


def _read_reviews(source: Path) -> Dict[str, List[Tuple[int, int, str]]]:
    """split -> [(label, id, text)], sorted by (label, id) so the order is reproducible."""
    reviews: Dict[str, List[Tuple[int, int, str]]] = {split: [] for split in _SPLITS}
    if source.is_dir():
        for split in _SPLITS:
            for label in ("neg", "pos"):
                for file in (source / split / label).iterdir():
                    key = _review_key(split, label, file.name)
                    if key is not None:
                        reviews[split].append((key[1], key[2], file.read_text("utf-8")))
    else:
        try:
            archive = tarfile.open(source, "r:*")
        except tarfile.TarError as exc:
            raise ValueError(
                f"path: {str(source)!r} is not a readable tar archive ({exc})") from exc
        with archive:
            for member in archive:
                parts = member.name.split("/")
                # <top folder>/<split>/<pos|neg>/<id>_<rating>.txt; skips unsup/, README, ...
                if not member.isfile() or len(parts) < 4:
                    continue
                key = _review_key(*parts[-3:])
                if key is not None:
                    text = archive.extractfile(member).read().decode("utf-8")
                    reviews[key[0]].append((key[1], key[2], text))
    for split in _SPLITS:
        if not reviews[split]:
            raise ValueError(
                f"path: {str(source)!r} holds no {split}/pos or {split}/neg reviews; "
                "is it the aclImdb dataset?")
        reviews[split].sort(key=lambda review: review[:2])
    return reviews


@dataclass
class _Tokenised:
    """The dataset as word ranks: rank r >= 1 is the r-th most frequent train word, 0 a
    word unseen in train.  ``offsets[split]`` has n+1 entries delimiting each review."""

    words: List[str]                   # words[r - 1] has rank r
    ranks: Dict[str, np.ndarray]       # split -> int32 flat ranks
    offsets: Dict[str, np.ndarray]     # split -> int64, (n + 1,)
    labels: Dict[str, np.ndarray]      # split -> int8 (n,)


def _tokenise(reviews) -> _Tokenised:
    tokens = {split: [tokenize(text) for _, _, text in reviews[split]] for split in _SPLITS}
    counts = Counter()
    for words in tokens["train"]:
        counts.update(words)
    vocabulary = sorted(counts, key=lambda word: (-counts[word], word))
    rank_of = {word: rank for rank, word in enumerate(vocabulary, start=1)}
    ranks, offsets, labels = {}, {}, {}
    for split in _SPLITS:
        lengths = np.fromiter((len(words) for words in tokens[split]), np.int64,
                              len(tokens[split]))
        offsets[split] = np.concatenate([[0], np.cumsum(lengths)])
        lookup = rank_of.get
        ranks[split] = np.fromiter(
            (lookup(word, 0) for words in tokens[split] for word in words), np.int32,
            int(offsets[split][-1]))
        labels[split] = np.array([label for label, _, _ in reviews[split]], np.int8)
    return _Tokenised(vocabulary, ranks, offsets, labels)


# --------------------------------------------------------------------------- cache


def _cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fusedrnn"


def _cache_file(source: Path) -> Path:
    stat = source.stat()
    key = f"{_CACHE_FORMAT}|{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return _cache_dir() / f"imdb-{hashlib.sha1(key.encode()).hexdigest()[:20]}.npz"


def _save_cache(data: _Tokenised, file: Path) -> None:
    arrays = {"words": np.frombuffer("\n".join(data.words).encode("utf-8"), np.uint8)}
    for split in _SPLITS:
        arrays[f"{split}_ranks"] = data.ranks[split]
        arrays[f"{split}_offsets"] = data.offsets[split]
        arrays[f"{split}_labels"] = data.labels[split]
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        partial = file.with_name(f"{file.name}.{os.getpid()}.tmp.npz")
        np.savez(partial, **arrays)
        os.replace(partial, file)  # atomic: concurrent readers never see half a file
    except OSError as exc:  # a read-only home must not break loading
        warnings.warn(f"could not write the IMDB cache {file}: {exc}", RuntimeWarning,
                      stacklevel=3)


def _load_cache(file: Path) -> Optional[_Tokenised]:
    try:
        with np.load(file) as stored:
            words = stored["words"].tobytes().decode("utf-8").split("\n")
            return _Tokenised(
                words,
                {split: stored[f"{split}_ranks"] for split in _SPLITS},
                {split: stored[f"{split}_offsets"] for split in _SPLITS},
                {split: stored[f"{split}_labels"] for split in _SPLITS},
            )
    except (OSError, KeyError, ValueError):  # missing or corrupt: rebuild
        return None


def _tokenised(path, cache: bool) -> _Tokenised:
    source = find_dataset(path)
    if not cache or source.is_dir():  # folders have no single mtime to key a cache on
        return _tokenise(_read_reviews(source))
    file = _cache_file(source)
    data = _load_cache(file) if file.is_file() else None
    if data is None:
        data = _tokenise(_read_reviews(source))
        _save_cache(data, file)
    return data


# --------------------------------------------------------------------------- public API


def _optional_int(value, name, minimum):
    if value is None:
        return None
    return _int(value, name, minimum)


def _int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def load_data(path=None, num_words=None, maxlen=None, skip_top=0, seed=113, start_char=1,
              oov_char=2, index_from=3, *, cache=True):
    """Load IMDB as ``(x_train, y_train), (x_test, y_test)`` in the form of
    ``keras.datasets.imdb.load_data``.

    x arrays are 1-D object arrays of Python int lists (one review each), y arrays int64
    labels (1 = positive).  25,000 reviews per split before ``maxlen`` filtering.

    path: the tarball / extracted folder (see the module docstring); None reads
        ``$FUSEDRNN_IMDB``.
    num_words: keep only indices below this (i.e. the ``num_words - index_from`` most
        frequent words); others become ``oov_char``.  None keeps every word.
    maxlen: drop reviews whose length (start token included) is >= maxlen, as Keras does.
    skip_top: the ``skip_top`` most frequent words become ``oov_char`` (counted in word
        ranks, so ``start_char`` is never replaced -- unlike Keras, which compares the
        shifted index).
    seed: shuffles the train split, then the test split, with one RandomState(seed), as
        Keras does; None keeps the reading order (negatives then positives, by review id).
    start_char: prepended to every review; None for none.
    oov_char: replaces out-of-vocabulary words; None drops them instead.
    index_from: word of rank r gets index ``r + index_from``.
    cache: reuse/write the tokenised cache (see the module docstring).
    """
    num_words = _optional_int(num_words, "num_words", 1)
    maxlen = _optional_int(maxlen, "maxlen", 1)
    skip_top = _int(skip_top, "skip_top", 0)
    seed = _optional_int(seed, "seed", 0)
    start_char = _optional_int(start_char, "start_char", 0)
    oov_char = _optional_int(oov_char, "oov_char", 0)
    index_from = _int(index_from, "index_from", 0)

    data = _tokenised(path, cache)
    rng = np.random.RandomState(seed) if seed is not None else None
    result = []
    for split in _SPLITS:
        ranks, offsets = data.ranks[split], data.offsets[split]
        labels = data.labels[split].astype(np.int64)
        order = np.arange(len(labels))
        if rng is not None:
            rng.shuffle(order)  # same RandomState for both splits, train first (as Keras)
        if maxlen is not None:  # as Keras: on the full length, before dropping any word
            full_lengths = np.diff(offsets) + (start_char is not None)
            order = order[full_lengths[order] < maxlen]
            if order.size == 0:
                raise ValueError(
                    f"maxlen: {maxlen} removes every {split} review; use a larger maxlen")
        # Out of vocabulary: unseen in train, within the skipped top, or index >= num_words.
        indices = ranks.astype(np.int64) + index_from
        keep = ranks > skip_top
        if num_words is not None:
            keep &= indices < num_words
        if oov_char is not None:
            indices = np.where(keep, indices, oov_char)
        else:  # drop out-of-vocabulary words: shift the review boundaries accordingly
            offsets = np.concatenate([[0], np.cumsum(keep)])[offsets]
            indices = indices[keep]
        if start_char is not None:  # insert it in the flat array: one list per review below
            indices = np.insert(indices, offsets[:-1], start_char)
            offsets = offsets + np.arange(offsets.size)
        # One tolist() and list slices: ~10x faster than a tolist() per review.
        flat, bounds = indices.tolist(), offsets.tolist()
        sequences = [flat[bounds[review]:bounds[review + 1]] for review in order.tolist()]
        labels = labels[order]
        x = np.empty(len(sequences), dtype=object)  # not np.array: equal lengths would go 2-D
        for i, sequence in enumerate(sequences):
            x[i] = sequence
        result.append((x, labels))
    return tuple(result)


def get_word_index(path=None, *, cache=True) -> Dict[str, int]:
    """word -> rank (1 = most frequent in train), as ``keras.datasets.imdb.get_word_index``;
    the word's index in :func:`load_data` sequences is ``rank + index_from``."""
    data = _tokenised(path, cache)
    return {word: rank for rank, word in enumerate(data.words, start=1)}
