import pytest

from gemo.data.index import DatasetError, index_dataset, read_label_file, source_group
from gemo.workspace import Workspace


def _touch_clips(root, split_dir, ids):
    (root / split_dir).mkdir(parents=True, exist_ok=True)
    for clip_id in ids:
        (root / split_dir / f"{clip_id}.mp4").write_bytes(b"")


@pytest.mark.parametrize("train_name,val_name", [
    ("Train_labels.txt", "Val_labels.txt"),
    ("train_label.txt", "val_label.txt"),
])
def test_vgaf_layout_both_label_namings(tmp_path, train_name, val_name):
    _touch_clips(tmp_path, "Train", ["1_1", "1_2", "2_1"])
    _touch_clips(tmp_path, "Val", ["3_1"])
    _touch_clips(tmp_path, "Test", ["4_1"])
    (tmp_path / train_name).write_text("Vid_name Label\n1_1 1\n1_2 2\n2_1 3\n")
    (tmp_path / val_name).write_text("Vid_name Label\n3_1 2\n")
    index = index_dataset(tmp_path)
    clips = index.by_id()
    assert index.layout == "vgaf"
    assert [(c.id, c.split, c.label) for c in index.clips] == [
        ("1_1", "train", 0), ("1_2", "train", 1), ("2_1", "train", 2),
        ("3_1", "val", 1), ("4_1", "test", None),
    ]
    assert clips["1_2"].group == "1" and clips["1_2"].label_name == "Neutral"
    assert clips["4_1"].path.endswith("Test/4_1.mp4")


def test_label_file_tolerates_bom_crlf_spaces_and_no_header(tmp_path):
    path = tmp_path / "Train_labels.txt"
    path.write_bytes("\ufeff1_1 3  \r\n1_2 1\r\n\r\n".encode("utf-8"))
    assert read_label_file(path) == {"1_1": 2, "1_2": 0}
    path.write_bytes("\ufeffVid_name Label\r\n1_1 2 \r\n".encode("utf-8"))
    assert read_label_file(path) == {"1_1": 1}


@pytest.mark.parametrize("line,message", [
    ("1_1 4", "unknown label '4'"),
    ("1_1 happy", "unknown label 'happy'"),
    ("1_1", "expected `<id> <label>`"),
])
def test_bad_label_values_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "Train_labels.txt"
    path.write_text(f"Vid_name Label\n1_2 1\n{line}\n")
    with pytest.raises(DatasetError, match=rf"Train_labels.txt:3: .*{message}"):
        read_label_file(path)


def test_duplicate_ids_are_errors(tmp_path):
    path = tmp_path / "Train_labels.txt"
    path.write_text("Vid_name Label\n1_1 1\n1_1 2\n")
    with pytest.raises(DatasetError, match="duplicate id '1_1'"):
        read_label_file(path)
    _touch_clips(tmp_path, "Train", ["5_1"])
    _touch_clips(tmp_path, "Val", ["5_1"])
    path.unlink()
    with pytest.raises(DatasetError, match="duplicate clip id '5_1'"):
        index_dataset(tmp_path)


def test_warnings_for_missing_clips_and_unlabelled_train(tmp_path):
    _touch_clips(tmp_path, "Train", ["1_1", "1_2"])
    (tmp_path / "Train_labels.txt").write_text("Vid_name Label\n1_1 1\n9_9 2\n")
    with pytest.warns(UserWarning) as caught:
        index = index_dataset(tmp_path)
    text = " ".join(str(w.message) for w in caught)
    assert "9_9" in text and "not found" in text
    assert "1_2" in text and "left out of training" in text
    assert [c.id for c in index.labelled("train")] == ["1_1"]


def test_csv_manifest(tmp_path):
    (tmp_path / "media").mkdir()
    for name in ("a_1", "a_2", "b"):
        (tmp_path / "media" / f"{name}.mp4").write_bytes(b"")
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        "path,split,label\n"
        "media/a_1.mp4,train,Positive\n"
        f"{tmp_path / 'media' / 'a_2.mp4'},val,3\n"
        "media/b.mp4,test,\n"
    )
    index = index_dataset(manifest)
    assert index.layout == "csv"
    assert [(c.id, c.split, c.label, c.group) for c in index.clips] == [
        ("a_1", "train", 0, "a"), ("a_2", "val", 2, "a"), ("b", "test", None, "b"),
    ]
    assert index.clips[0].path == str((tmp_path / "media" / "a_1.mp4").resolve())


@pytest.mark.parametrize("row,message", [
    ("x.mp4,train,joy", "list.csv:2: unknown label 'joy'"),
    ("x.mp4,dev,1", "list.csv:2: unknown split 'dev'"),
])
def test_csv_manifest_errors(tmp_path, row, message):
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path,split,label\n{row}\n")
    with pytest.raises(DatasetError, match=message):
        index_dataset(manifest)


def test_csv_duplicate_ids(tmp_path):
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,split,label\na/x.mp4,train,1\nb/x.mp4,val,2\n")
    with pytest.raises(DatasetError, match="duplicate clip id 'x'"):
        index_dataset(manifest)


def test_source_group():
    assert source_group("12_3") == "12"
    assert source_group("a_b_7") == "a_b"
    assert source_group("plain") == "plain"


def test_workspace_remembers_index(tmp_path, monkeypatch):
    _touch_clips(tmp_path / "data", "Test", ["1_1"])
    workspace = Workspace(tmp_path / "ws")
    with pytest.raises(FileNotFoundError, match="gemo extract DATASET"):
        workspace.load_index()
    index = index_dataset(tmp_path / "data")
    workspace.save_index(index)
    monkeypatch.setenv("GEMO_WORKDIR", str(tmp_path / "ws"))
    assert Workspace().load_index() == index


def test_the_index_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    """The new index reaches the disk (fsync) before it replaces the old one; a write that
    fails leaves the old index and no temporary file."""
    import os
    from pathlib import Path

    _touch_clips(tmp_path / "data", "Test", ["1_1", "1_2"])
    workspace = Workspace(tmp_path / "ws")
    old = index_dataset(tmp_path / "data")
    synced = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.fstat(fd).st_ino) or fsync(fd))
    workspace.save_index(old)
    # The file now in place, before it was renamed; then the folder, which records the rename.
    assert synced == [workspace.index_path.stat().st_ino, workspace.root.stat().st_ino]

    def fail_halfway(path, text):
        with open(path, "w") as handle:
            handle.write(text[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", fail_halfway)
    _touch_clips(tmp_path / "data", "Test", ["1_3"])
    with pytest.raises(OSError, match="No space"):
        workspace.save_index(index_dataset(tmp_path / "data"))
    assert [path.name for path in workspace.root.iterdir()] == ["dataset.json"]
    assert workspace.load_index() == old


def test_cli_names_a_folder_that_is_not_a_dataset_without_a_traceback(tmp_path):
    from click.testing import CliRunner

    from gemo.cli import cli

    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(b"")
    result = CliRunner().invoke(cli, ["extract", str(tmp_path / "clips"),
                                      "--workdir", str(tmp_path / "work"), "--quiet"])
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())  # rich wraps long lines
    assert output.startswith("error:") and "no Train/, Val/ or Test/ folder" in output
    assert "CSV manifest" in output
    assert "Traceback" not in result.output
