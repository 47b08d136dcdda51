"""fusedrnn.datasets.imdb: tokenisation, indices, Keras' load_data options, cache, errors.

The real tarball (../shared/datasets/imdb/ relative to the repository root, or
$FUSEDRNN_IMDB) must reproduce the train figures of that folder's README exactly; the
option semantics are checked on a tiny hand-made tarball whose answers are known."""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from fusedrnn.datasets import imdb

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_TARBALL = REPO_ROOT.parent / "shared" / "datasets" / "imdb" / imdb.FILENAMES[0]


def real_imdb_path():
    """The real dataset, or skip (fail in CI, where ../shared/datasets/imdb must exist)."""
    for candidate in (os.environ.get(imdb.ENV_VAR), SHARED_TARBALL):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    message = f"IMDB tarball not found at {SHARED_TARBALL} (or ${imdb.ENV_VAR})"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def real_data():
    # Default cache: the first run parses the tarball (~10 s), later runs load in ~1 s.
    return imdb.load_data(real_imdb_path())


# ----------------------------------------------------------------------------- real data


def test_train_figures_match_the_readme(real_data):
    (x_train, y_train), _ = real_data
    lengths = np.array([len(s) for s in x_train])
    assert round(lengths.mean(), 2) == 238.71
    assert lengths.max() == 2494
    assert [(lengths < n).sum() for n in (50, 100, 200)] == [477, 2773, 14244]
    long = lengths >= 1000
    assert long.sum() == 124
    assert y_train[long].sum() == 65


def test_real_data_shapes_labels_and_indices(real_data):
    (x_train, y_train), (x_test, y_test) = real_data
    for x, y in ((x_train, y_train), (x_test, y_test)):
        assert x.dtype == object and x.shape == (25000,)
        assert y.dtype == np.int64 and y.shape == (25000,)
        assert y.sum() == 12500
        assert all(s[0] == 1 for s in x[:100])
        assert all(isinstance(w, int) for w in x[0])
    # Test words unseen in train are out of vocabulary (2); train has none.
    assert not any(2 in s for s in x_train)
    assert sum(s.count(2) for s in x_test) > 0


def test_real_word_index_matches_keras_top_ranks():
    index = imdb.get_word_index(real_imdb_path())
    # Keras' imdb_word_index.json has these exact ranks for the most frequent words.
    expected = {"the": 1, "and": 2, "a": 3, "of": 4, "to": 5, "is": 6, "br": 7, "in": 8,
                "it": 9, "i": 10, "this": 11, "that": 12, "was": 13, "as": 14, "for": 15,
                "with": 16, "movie": 17, "but": 18, "film": 19}
    assert {w: index[w] for w in expected} == expected
    assert sorted(index.values()) == list(range(1, len(index) + 1))


# ----------------------------------------------------------------------------- tiny tarball

TRAIN = {
    ("pos", "0_9"): "Great movie!<br />Great acting.",
    ("pos", "1_8"): "I loved it, GREAT great fun",
    ("neg", "0_1"): "Bad movie. Awful; bad acting",
    ("neg", "1_2"): "Don't watch: BAD!",
}
TEST = {
    ("pos", "0_10"): "great great zebra",
    ("neg", "0_3"): "bad movie",
}
# Train counts: great 4, bad 3, movie 2, acting 2, then 1 each (ties alphabetical).
EXPECTED_RANKS = ["great", "bad", "acting", "movie", "awful", "br", "don't", "fun", "i",
                  "it", "loved", "watch"]


def _write_tarball(path: Path, top="aclImdb", compression="gz", extra=None):
    with tarfile.open(path, f"w:{compression}") as archive:
        def add(name, text):
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        add(f"{top}/README", "not a review")
        for split, reviews in (("train", TRAIN), ("test", TEST)):
            for (label, stem), text in reviews.items():
                add(f"{top}/{split}/{label}/{stem}.txt", text)
        add(f"{top}/train/unsup/0_0.txt", "unlabelled words never counted")
        for name, text in (extra or {}).items():
            add(name, text)
    return path


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(imdb.CACHE_ENV_VAR, str(folder))
    monkeypatch.delenv(imdb.ENV_VAR, raising=False)
    return folder


@pytest.fixture
def tiny(tmp_path, cache_dir):
    return _write_tarball(tmp_path / "aclImdb_v1.tar.gz")


def _decode(sequence, index_from=3):
    words = {rank + index_from: w for rank, w in enumerate(EXPECTED_RANKS, start=1)}
    return [words.get(i, f"<{i}>") for i in sequence]


def test_tokenize_follows_keras_filters():
    assert imdb.tokenize("Don't <br />STOP—now!\tOK?") == ["don't", "br", "stop—now", "ok"]
    assert imdb.tokenize("a-b_c.d") == ["a", "b", "c", "d"]


def test_word_index_ranks_by_train_frequency_ties_alphabetical(tiny):
    index = imdb.get_word_index(tiny)
    assert index == {w: r for r, w in enumerate(EXPECTED_RANKS, start=1)}
    assert "zebra" not in index and "unlabelled" not in index


def test_sequences_decode_back_to_the_reviews(tiny):
    (x_train, y_train), (x_test, y_test) = imdb.load_data(tiny, seed=None)
    # Reading order: negatives then positives, by review id.
    texts = [TRAIN["neg", "0_1"], TRAIN["neg", "1_2"], TRAIN["pos", "0_9"], TRAIN["pos", "1_8"]]
    assert y_train.tolist() == [0, 0, 1, 1]
    for sequence, text in zip(x_train, texts):
        assert sequence[0] == 1
        assert _decode(sequence[1:]) == imdb.tokenize(text)
    assert y_test.tolist() == [0, 1]
    assert x_test[1] == [1, 4, 4, 2]  # "great great zebra": zebra unseen in train -> oov


def test_seed_shuffles_like_keras(tiny):
    (x_plain, y_plain), (t_plain, _) = imdb.load_data(tiny, seed=None)
    (x, y), (t, _) = imdb.load_data(tiny, seed=113)
    rng = np.random.RandomState(113)
    order = np.arange(4)
    rng.shuffle(order)
    test_order = np.arange(2)
    rng.shuffle(test_order)  # the same RandomState continues for the test split
    assert list(x) == [x_plain[i] for i in order]
    assert y.tolist() == y_plain[order].tolist()
    assert list(t) == [t_plain[i] for i in test_order]
    again = imdb.load_data(tiny, seed=113)
    assert list(again[0][0]) == list(x)


def test_num_words_skip_top_and_oov(tiny):
    (x, _), _ = imdb.load_data(tiny, seed=None, num_words=6)  # indices < 6: great, bad
    assert x[3] == [1, 2, 2, 2, 4, 4, 2]  # "i loved it great great fun"
    (x, _), _ = imdb.load_data(tiny, seed=None, skip_top=1)  # "great" becomes oov
    assert x[2][:3] == [1, 2, 7]
    (x, _), _ = imdb.load_data(tiny, seed=None, num_words=6, oov_char=None)
    assert x[3] == [1, 4, 4]
    (x, _), _ = imdb.load_data(tiny, seed=None, start_char=None, index_from=0)
    assert x[0] == [2, 4, 5, 2, 3]  # bad movie awful bad acting, ranks


def test_maxlen_drops_reviews_as_keras(tiny):
    # Lengths with the start token: neg 6, 4; pos 6, 7 (Keras keeps len < maxlen).
    (x, y), (t, _) = imdb.load_data(tiny, seed=None, maxlen=6)
    assert [len(s) for s in x] == [4] and y.tolist() == [0]
    assert len(t) == 2
    # The length is measured before oov words are dropped: the 7-token review goes
    # although only [1, 4, 4] would remain of it.
    (x, _), _ = imdb.load_data(tiny, seed=None, maxlen=7, num_words=5, oov_char=None)
    assert list(x) == [[1], [1], [1, 4, 4]]
    with pytest.raises(ValueError, match="maxlen"):
        imdb.load_data(tiny, maxlen=3)


def test_official_layout_and_extracted_folder(tmp_path, cache_dir):
    tarball = _write_tarball(tmp_path / "aclImdb_v1_labelled.tar.xz", compression="xz")
    expected = imdb.load_data(tarball, seed=None)
    # A folder holding the tarball, and an extracted folder, give the same data.
    assert imdb.find_dataset(tmp_path) == tarball
    with tarfile.open(tarball) as archive:
        # the "data" filter exists from Python 3.11.4 / 3.12 on; Debian's 3.11.2 lacks it
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(tmp_path / "extracted", **safe)
    for source in (tmp_path / "extracted", tmp_path / "extracted" / "aclImdb"):
        got = imdb.load_data(source, seed=None)
        assert [list(a) for a in got[0]] == [list(a) for a in expected[0]]


def test_environment_variable(tiny, monkeypatch):
    monkeypatch.setenv(imdb.ENV_VAR, str(tiny))
    assert imdb.get_word_index()["great"] == 1


def test_missing_file_says_what_to_pass(tmp_path, cache_dir):
    with pytest.raises(FileNotFoundError, match=r"path=.*FUSEDRNN_IMDB"):
        imdb.load_data()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        imdb.load_data(tmp_path / "nope.tar.gz")
    with pytest.raises(FileNotFoundError, match="folder without"):
        imdb.load_data(tmp_path)


def test_not_the_dataset(tmp_path, cache_dir):
    other = tmp_path / "other.tar.gz"
    with tarfile.open(other, "w:gz") as archive:
        info = tarfile.TarInfo("x/readme.txt")
        archive.addfile(info, io.BytesIO(b""))
    with pytest.raises(ValueError, match="no train/pos"):
        imdb.load_data(other)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(ValueError, match="not a readable tar"):
        imdb.load_data(junk)


@pytest.mark.parametrize("kwargs, error, name", [
    ({"num_words": 0}, ValueError, "num_words"),
    ({"num_words": 2.5}, TypeError, "num_words"),
    ({"maxlen": "10"}, TypeError, "maxlen"),
    ({"skip_top": -1}, ValueError, "skip_top"),
    ({"seed": True}, TypeError, "seed"),
    ({"oov_char": -2}, ValueError, "oov_char"),
    ({"index_from": None}, TypeError, "index_from"),
    ({"path": 3}, TypeError, "path"),
])
def test_bad_arguments_name_the_argument(tiny, kwargs, error, name):
    kwargs.setdefault("path", tiny)
    with pytest.raises(error, match=name):
        imdb.load_data(**kwargs)


def test_cache_is_written_reused_and_invalidated(tiny, cache_dir, monkeypatch):
    first = imdb.load_data(tiny)
    files = list(cache_dir.glob("imdb-*.npz"))
    assert len(files) == 1

    def no_parsing(_):
        raise AssertionError("the tarball was parsed although the cache is valid")
    monkeypatch.setattr(imdb, "_read_reviews", no_parsing)
    second = imdb.load_data(tiny)
    assert [list(s) for s in second[0][0]] == [list(s) for s in first[0][0]]
    # A changed file (new mtime) is parsed again.
    os.utime(tiny, ns=(0, 10**18))
    with pytest.raises(AssertionError, match="parsed"):
        imdb.load_data(tiny)
    monkeypatch.undo()


def test_cache_false_and_corrupt_cache(tiny, cache_dir):
    imdb.load_data(tiny, cache=False)
    assert not cache_dir.exists()
    imdb.load_data(tiny)
    (file,) = cache_dir.glob("imdb-*.npz")
    file.write_bytes(b"corrupt")
    (x, _), _ = imdb.load_data(tiny, seed=None)  # rebuilt, not an error
    assert x[0][0] == 1
    assert file.stat().st_size > len(b"corrupt")
