"""Fixtures shared by the test files."""
import importlib.util
import os
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


@pytest.fixture(scope="session")
def table1():
    """results/ptb/table1.py, the Table 1 statistics command (a script, not a module on the path)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results", "ptb", "table1.py")
    spec = importlib.util.spec_from_file_location("table1", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
