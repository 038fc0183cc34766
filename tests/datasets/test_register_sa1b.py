import os
import subprocess
import sys

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from datasets.register_sa1b import (
    SA1BSettings,
    get_sa1b_source,
    list_tsv_shards,
    register_all_sa1b,
    sa1b_settings_from_env,
)
from semantic_sam.data.tsv import TSVFormatError, TSVWriter
from tools.make_synthetic_sa1b import make_synthetic_sa1b

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV_VARS = [
    "SAM_DATASET",
    "SAM_DATASETS",
    "SAM_DATASET_START",
    "SAM_SUBSET_START",
    "SAM_DATASET_END",
    "SAM_SUBSET_END",
    "SAM_DATASET_VAL",
    "SAM_JSON",
    "SAM_JSON_VAL",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for v in ENV_VARS:
        monkeypatch.delenv(v, raising=False)


def _shards(folder, names_rows):
    """Write tiny TSV shards; each row's name records its shard file, so the order can be checked."""
    os.makedirs(folder, exist_ok=True)
    for name, rows in names_rows:
        with TSVWriter(os.path.join(folder, name)) as w:
            for r in range(rows):
                w.write([f"{name}:{r}", "{}", ""])
    return str(folder)


def test_settings_defaults():
    s = sa1b_settings_from_env()
    assert s == SA1BSettings()
    assert s.tsv_root == os.path.join("datasets", "sa1b") and s.start == 0 and s.end is None
    assert s.val_root == os.path.join("datasets", "sa1b", "val")
    assert s.json_val_root == os.path.join("datasets", "sa1b_json", "val")


@pytest.mark.parametrize(
    "root, start, end",
    [("SAM_DATASET", "SAM_DATASET_START", "SAM_DATASET_END"), ("SAM_DATASETS", "SAM_SUBSET_START", "SAM_SUBSET_END")],
)
def test_both_env_spellings(monkeypatch, tmp_path, root, start, end):
    folder = _shards(tmp_path / "tsv", [(f"part-{i}.tsv", 1) for i in range(5)])
    monkeypatch.setenv(root, folder)
    monkeypatch.setenv(start, "1")
    monkeypatch.setenv(end, "3")
    s = register_all_sa1b()
    assert (s.tsv_root, s.tsv_root_env, s.start, s.end) == (folder, root, 1, 3)
    assert s.val_root == os.path.join(folder, "val")
    src = get_sa1b_source("sam_train")
    assert [os.path.basename(p) for p in src.shards.paths] == ["part-1.tsv", "part-2.tsv"]
    assert DatasetCatalog.get("sam_train") == [{"shard": 0, "row": 0}, {"shard": 1, "row": 0}]
    meta = MetadataCatalog.get("sam_train")
    assert meta.evaluator_type == "sam_interactive" and meta.shard_range == (1, 3)


def test_preferred_spelling_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("SAM_DATASET", str(tmp_path / "a"))
    monkeypatch.setenv("SAM_DATASETS", str(tmp_path / "b"))
    monkeypatch.setenv("SAM_SUBSET_START", "4")
    s = sa1b_settings_from_env()
    assert s.tsv_root == str(tmp_path / "a") and s.start == 4


def test_bad_integer_names_the_variable(monkeypatch):
    monkeypatch.setenv("SAM_SUBSET_END", "ten")
    with pytest.raises(ValueError, match=r"\$SAM_SUBSET_END must be an integer"):
        sa1b_settings_from_env()


def test_shards_in_natural_sorted_order_with_range(tmp_path):
    # created in a scrambled order; lexicographic order would put part-10 before part-2
    folder = _shards(tmp_path, [("part-10.tsv", 1), ("part-2.tsv", 2), ("part-0.tsv", 1), ("part-1.tsv", 3)])
    (tmp_path / "part-3.tsv.partial").write_text("x")  # an unfinished conversion is ignored
    names = lambda paths: [os.path.basename(p) for p in paths]  # noqa: E731
    assert names(list_tsv_shards(folder)) == ["part-0.tsv", "part-1.tsv", "part-2.tsv", "part-10.tsv"]
    assert names(list_tsv_shards(folder, 1, 3)) == ["part-1.tsv", "part-2.tsv"]
    assert names(list_tsv_shards(folder, 2)) == ["part-2.tsv", "part-10.tsv"]
    register_all_sa1b(SA1BSettings(tsv_root=folder, start=1, end=3))
    dicts = DatasetCatalog.get("sam_train")
    assert len(dicts) == 5
    src = get_sa1b_source("sam_train")
    rows = [src.shards.read_row(d["shard"], d["row"])[0] for d in dicts]
    assert rows == ["part-1.tsv:0", "part-1.tsv:1", "part-1.tsv:2", "part-2.tsv:0", "part-2.tsv:1"]


def test_empty_range_is_an_error(tmp_path):
    folder = _shards(tmp_path, [("a.tsv", 1)])
    with pytest.raises(ValueError, match=r"no SA-1B TSV shard .* index in \[3, 5\) \(1 \*\.tsv files found\)"):
        list_tsv_shards(folder, 3, 5)


def test_empty_shard_in_a_registered_dataset_is_an_error(tmp_path):
    folder = _shards(tmp_path, [("part-0.tsv", 2), ("part-1.tsv", 0), ("part-2.tsv", 1)])
    register_all_sa1b(SA1BSettings(tsv_root=folder))
    with pytest.raises(TSVFormatError) as e:
        DatasetCatalog.get("sam_train")
    assert str(e.value).startswith(os.path.join(folder, "part-1.tsv") + " is an empty SA-1B shard")
    # the shards around it are fine
    register_all_sa1b(SA1BSettings(tsv_root=folder, start=2))
    assert len(DatasetCatalog.get("sam_train")) == 1


def test_missing_folder_names_path_and_variable(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("SAM_DATASETS", str(missing))
    register_all_sa1b()  # registration itself never touches the disk
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get("sam_train")
    assert str(missing) in str(e.value) and "$SAM_DATASETS" in str(e.value)
    with pytest.raises(FileNotFoundError, match=r"\$SAM_DATASET_VAL"):
        DatasetCatalog.get("sam_val")
    with pytest.raises(FileNotFoundError, match=r"sa1b_json.*\$SAM_JSON"):
        DatasetCatalog.get("sam_json_train")


def test_json_registration(monkeypatch, tmp_path):
    make_synthetic_sa1b(str(tmp_path / "json"), 3, seed=1, size=48)
    make_synthetic_sa1b(str(tmp_path / "json" / "val"), 2, seed=2, size=48, start_id=100)
    (tmp_path / "json" / "sa_99.jpg").write_bytes(b"no json next to me")
    monkeypatch.setenv("SAM_JSON", str(tmp_path / "json"))
    register_all_sa1b()
    train = DatasetCatalog.get("sam_json_train")
    assert [os.path.basename(d["file_name"]) for d in train] == ["sa_1.jpg", "sa_2.jpg", "sa_3.jpg"]
    assert all(d["annotation_file"] == d["file_name"][:-4] + ".json" for d in train)
    assert [d["index"] for d in train] == [0, 1, 2]
    val = DatasetCatalog.get("sam_minival")
    assert [os.path.basename(d["file_name"]) for d in val] == ["sa_100.jpg", "sa_101.jpg"]
    rec = get_sa1b_source("sam_minival").load(1)
    assert rec.file_name == "sa_101.jpg" and len(rec.annotations) > 0


def test_reregistration_replaces(tmp_path):
    a = _shards(tmp_path / "a", [("x.tsv", 1)])
    b = _shards(tmp_path / "b", [("y.tsv", 2)])
    register_all_sa1b(SA1BSettings(tsv_root=a))
    assert len(DatasetCatalog.get("sam_train")) == 1
    register_all_sa1b(SA1BSettings(tsv_root=b))
    assert len(DatasetCatalog.get("sam_train")) == 2


def test_unknown_dataset_source():
    with pytest.raises(KeyError, match="register_all_sa1b"):
        get_sa1b_source("coco_2017_val")


def test_import_registers_nothing():
    code = (
        "import datasets.register_sa1b, datasets.sa1b_dataset_mapper\n"
        "from detectron2.data import DatasetCatalog\n"
        "assert not {'sam_train', 'sam_val', 'sam_json_train', 'sam_minival'} & set(DatasetCatalog.list())\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
