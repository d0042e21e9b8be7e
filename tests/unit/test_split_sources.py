"""Split sources without Spark: stratified hash, path, groups, carving val from train, warnings."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
from pydantic import ValidationError

from dltool.config.models import SplitSettings
from dltool.splits import Item, assign, report, split_of


def items_for(counts: dict[str, int]) -> list[Item]:
    return [Item(f"{c}/{i:05d}.jpg", f"{c}/{i:05d}.jpg", c) for c, n in counts.items() for i in range(n)]


def per_class(items, placed):
    table = defaultdict(Counter)
    for item in items:
        table[item.label][placed[item.key]] += 1
    return table


def test_stratified_hash_keeps_every_class_within_one_of_its_fractions():
    counts = {"rare": 1, "few": 3, "many": 1000, "some": 37}
    items = items_for(counts)
    split = SplitSettings(stratify=True)
    placed, missing = assign(items, split)
    assert not missing and len(placed) == len(items)
    for label, got in per_class(items, placed).items():
        n = counts[label]
        for name, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
            assert abs(got[name] - n * share) <= 1, (label, got)
    # Without stratify the split is today's: the stable hash of the key against the fractions.
    plain, _ = assign(items, SplitSettings())
    assert all(plain[i.key] == split_of(i.key, SplitSettings()) for i in items)


def test_a_new_record_moves_at_most_one_record_per_cut_of_its_class():
    items = items_for({"a": 200})
    before, _ = assign(items, SplitSettings(stratify=True))
    after, _ = assign(items + [Item("a/new.jpg", "a/new.jpg", "a")], SplitSettings(stratify=True))
    moved = [k for k in before if before[k] != after[k]]
    assert len(moved) <= 2


def test_path_split_reads_the_folder_names_and_quarantines_paths_it_cannot_place():
    paths = ["train/cat/1.jpg", "train/dog/2.jpg", "validation/cat/3.jpg", "Test/dog/4.jpg", "holdout/cat/5.jpg",
             "extra/cat/6.jpg", "sub/train/dog/7.jpg"]  # fmt: skip
    items = [Item(p, p, p.split("/")[-2]) for p in paths]
    placed, missing = assign(items, SplitSettings(by="path", names={"holdout": "test"}))
    assert placed == {"train/cat/1.jpg": "train", "train/dog/2.jpg": "train", "validation/cat/3.jpg": "val",
                      "Test/dog/4.jpg": "test", "holdout/cat/5.jpg": "test", "sub/train/dog/7.jpg": "train"}  # fmt: skip
    assert list(missing) == ["extra/cat/6.jpg"] and "does not match" in missing["extra/cat/6.jpg"]
    placed, missing = assign(items[:1], SplitSettings(by="path", pattern=r"^(\w+)/"))
    assert placed == {"train/cat/1.jpg": "train"}
    _, missing = assign([Item("x/cat/1.jpg", "x/cat/1.jpg", "cat")], SplitSettings(by="path", pattern=r"^(\w+)/"))
    assert "names an unknown split 'x'" in missing["x/cat/1.jpg"]


def test_a_train_test_layout_gets_a_stratified_val_carved_from_train():
    paths = [f"train/{c}/{i}.jpg" for c in ("cat", "dog") for i in range(50)] + [f"test/cat/{i}.jpg" for i in range(5)]
    items = [Item(p, p, p.split("/")[1]) for p in paths]
    placed, _ = assign(items, SplitSettings(by="path", val_from_train=0.2))
    got = per_class(items, placed)
    assert got["cat"] == {"train": 40, "val": 10, "test": 5} and got["dog"] == {"train": 40, "val": 10}
    placed, _ = assign(items, SplitSettings(by="path", val_from_train=0))
    assert "val" not in placed.values()


@pytest.mark.parametrize("stratify", [False, True])
def test_a_group_never_spans_two_splits(stratify):
    items = [Item(f"spk{s:02d}/{c}/{i}.wav", f"spk{s:02d}/{c}/{i}.wav", c)
             for s in range(40) for c in ("yes", "no") for i in range(5)]  # fmt: skip
    placed, _ = assign(items, SplitSettings(group=r"^(spk\d+)/", stratify=stratify))
    splits_of_speaker = defaultdict(set)
    for item in items:
        splits_of_speaker[item.path.split("/")[0]].add(placed[item.key])
    assert all(len(s) == 1 for s in splits_of_speaker.values())
    assert Counter(next(iter(s)) for s in splits_of_speaker.values())["train"] >= 25


def test_config_checks_and_warnings():
    with pytest.raises(ValidationError, match="by: column needs 'column'"):
        SplitSettings(by="column")
    with pytest.raises(ValidationError, match="one of dltool's own per-row columns"):
        SplitSettings(by="column", column="Split")
    with pytest.raises(ValidationError, match="needs a \\(group\\)"):
        SplitSettings(by="path", pattern="train/")
    assert SplitSettings(by="column", column="fold", names={"Holdout ": "test"}).split_name(" holdout") == "test"
    warnings = report({"train": {"a": 5, "b": 4}, "val": {"a": 2}, "test": {}}, ["a", "b"], SplitSettings())
    assert warnings == ["split test is empty", "split val has no example of class b"]
    assert report({"train": {"a": 1}, "val": {"a": 1}, "test": {}}, ["a"], SplitSettings(by="path")) == []
    # one class written two ways is kept apart, and said
    counts = {"train": {"Churned": 9, "churned": 1, "Stayed": 5}, "val": {"Churned": 1, "churned": 1, "Stayed": 1}}
    assert report(counts, ["Churned", "Stayed", "churned"], SplitSettings(by="path")) == [
        "classes 'Churned', 'churned' differ only in case or spaces: one class written 2 ways? They are kept apart; "
        "write the label alike to make them one"]  # fmt: skip


def test_duplicates_across_splits_are_counted_with_example_keys():
    from dltool.splits import find_duplicates

    entries = [("d1", "train", "a.png"), ("d1", "test", "b.png"), ("d2", "train", "c.png"), ("d2", "train", "d.png"),
               ("d3", "val", "e.png"), ("d3", "test", "f.png"), ("d3", "train", "g.png"), ("d4", "test", "h.png")]  # fmt: skip
    found = find_duplicates(entries)
    assert (found.records, found.contents) == (5, 2)  # d2 repeats inside train only: not a leak
    assert found.examples[0] == {"splits": ["test", "train"], "keys": ["b.png", "a.png"]}
    assert "5 records have the same content as a record of another split" in found.message()
    assert find_duplicates([("d", "train", "a"), ("d", "train", "b")]) is None
    many = find_duplicates((f"d{i}", s, f"{s}{i}") for i in range(30) for s in ("train", "test"))
    assert sum(len(e["keys"]) for e in many.examples) == 20 and many.contents == 30
