"""Fixtures shared by the test files."""
import random

import pytest


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    """A tiny corpus of your own (train/valid/test.txt): 96 / 24 / 24 sentences of 3-6 words over 13 words."""
    root = tmp_path_factory.mktemp("tiny")
    r = random.Random(0)
    words = "the a cat dog sat ran on under mat log big small red".split()
    for split, n in (("train", 96), ("valid", 24), ("test", 24)):
        lines = [" ".join(r.choice(words) for _ in range(r.randint(3, 6))) for _ in range(n)]
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return str(root)
