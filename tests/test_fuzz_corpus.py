"""The hostile-input corpus (tests/hostile_corpus.py) through the ``softseg`` command line.

Every entry must end with exit 2 and one ``error:`` line naming the file and the problem (or exit 0
for inputs that are valid after all), change nothing that existed, leave no temporary or partial
output, print no traceback or RuntimeWarning, and never run code from a model file.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import hostile_corpus as corpus  # noqa: E402

ENTRIES = corpus.entries()


def test_corpus_names_are_unique_and_cover_every_kind():
    names = [e.name for e in ENTRIES]
    assert len(names) == len(set(names))
    kinds = Counter(e.kind for e in ENTRIES)
    assert set(kinds) >= {"nifti", "mask", "case", "output", "model", "argument", "dtype"}
    assert len(ENTRIES) >= 150
    refused = sum(e.keyword is not None for e in ENTRIES)
    assert refused >= 110  # most entries must be refused, so the checks on the error line are exercised


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_hostile_input_is_handled_cleanly(entry, tmp_path):
    outcome = corpus.run_entry(entry, tmp_path / "w")
    assert outcome.ok, f"{entry.name}: {outcome.problems}"


def test_the_checker_catches_a_violation(tmp_path):
    """The contract check itself must fail on a command that breaks it (so the corpus test can fail)."""
    def build(tmp):
        case = corpus.good_case(tmp / "case")
        return ["softlabel", str(case), "-o", str(tmp / "s.nii.gz")]

    # a valid input declared as 'must be refused': the checker reports exit 0 and no error line
    entry = corpus.Entry("case", "valid-but-expected-refusal", build, "not binary", "case")
    outcome = corpus.run_entry(entry, tmp_path / "a")
    assert not outcome.ok and any("exit 0" in p for p in outcome.problems)
    # an existing file changed behind the command's back is reported
    def build_and_touch(tmp):
        argv = build(tmp)
        (tmp / "mine.txt").write_text("original")
        corpus_hook.append(tmp / "mine.txt")
        return argv

    corpus_hook: list[Path] = []
    original = corpus.run_cli

    def run_and_modify(argv):
        result = original(argv)
        corpus_hook[0].write_text("changed")
        return result

    corpus.run_cli = run_and_modify
    try:
        outcome = corpus.run_entry(corpus.Entry("case", "touch", build_and_touch, None), tmp_path / "b")
    finally:
        corpus.run_cli = original
    assert not outcome.ok and any("changed existing files" in p for p in outcome.problems)
