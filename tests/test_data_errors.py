"""Bad data: every problem is a DataError whose message names the file and line (or the folder)."""

import json
import re

import pytest
from torch.utils.data import DataLoader

from datasets import make_few_shot, make_fgvc, make_imagefolder, make_vtab, write_image
from vitune.data import open_task
from vitune.errors import DataError


def raises(pattern: str):
    """pytest.raises(DataError) matching every part of `pattern` literally, in order."""
    return pytest.raises(DataError, match=".*".join(re.escape(part) for part in pattern.split("...")))


# --- the folder ------------------------------------------------------------------------------------------------


def test_missing_folder(tmp_path):
    with raises(f"data folder not found: {tmp_path / 'cifar'}"):
        open_task(tmp_path / "cifar")


def test_a_file_instead_of_a_folder(tmp_path):
    (tmp_path / "train800.txt").write_text("")
    with raises(f"not a folder: {tmp_path / 'train800.txt'}"):
        open_task(tmp_path / "train800.txt")


def test_no_recognisable_layout_names_the_folder_and_its_task_folders(tmp_path):
    make_vtab(tmp_path, "cifar")
    make_vtab(tmp_path, "dtd")
    with raises(f"no data set layout recognised in {tmp_path.resolve()}...task folders: cifar, dtd"):
        open_task(tmp_path)
    (tmp_path / "empty").mkdir()
    with raises(f"no data set layout recognised in {(tmp_path / 'empty').resolve()}: expected VTAB-1k"):
        open_task(tmp_path / "empty")


# --- split files -----------------------------------------------------------------------------------------------


def test_missing_vtab_split_file(tmp_path):
    task_dir = make_vtab(tmp_path, "tiny")
    (task_dir / "test.txt").unlink()
    task = open_task(task_dir)
    assert task.default_eval == "test" and "test" not in task.splits
    with raises(f"split file missing: {task.root / 'test.txt'}"):
        task.samples("test")


def test_missing_fgvc_split_file(tmp_path):
    task_dir = make_fgvc(tmp_path)
    (task_dir / "test.json").unlink()
    with raises(f"split file missing: {task_dir.resolve() / 'test.json'}"):
        open_task(task_dir).dataset("test")


def test_unknown_split_name_lists_the_splits(tmp_path):
    with raises("unknown split 'validation'...splits: train800, val200, train800val200, test"):
        open_task(make_vtab(tmp_path, "tiny")).samples("validation")


@pytest.mark.parametrize(
    "line, problem",
    [
        ("images/train800/000000.jpg", "expected '<image path> <integer label>'"),
        ("images/train800/000000.jpg cat", "label 'cat' is not an integer"),
        ("images/train800/000000.jpg 1.0", "label '1.0' is not an integer"),
        ("images/train800/000000.jpg -1", "label -1 is negative"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, line, problem):
    task_dir = make_vtab(tmp_path, "tiny", num_classes=2)
    (task_dir / "train800.txt").write_text(f"images/train800/000001.jpg 1\n\n{line}\n")
    with raises(f"{task_dir.resolve() / 'train800.txt'}, line 3: {problem}"):
        open_task(task_dir)  # an unknown task name reads every split to count classes


def test_malformed_line_of_a_known_task_shows_when_the_split_is_read(tmp_path):
    task_dir = make_vtab(tmp_path, "cifar", num_classes=2)
    (task_dir / "test.txt").write_text("images/test/000000.jpg 0\nimages/test/000001.jpg one\n")
    task = open_task(task_dir)  # the class count is known: nothing parsed yet
    task.samples("train800")
    with raises("test.txt, line 2: label 'one' is not an integer"):
        task.samples("test")


def test_label_out_of_range_of_a_known_task(tmp_path):
    task_dir = make_vtab(tmp_path, "svhn", num_classes=2)
    (task_dir / "val200.txt").write_text("images/val200/000000.jpg 0\nimages/val200/000001.jpg 10\n")
    with raises(f"{task_dir.resolve() / 'val200.txt'}, line 2: label 10 is outside 0..9 (svhn is a VTAB-1k task"):
        open_task(task_dir).samples("val200")


def test_referenced_image_missing(tmp_path):
    task_dir = make_vtab(tmp_path, "tiny", num_classes=2)
    (task_dir / "images/test/000003.jpg").unlink()
    with raises(f"{task_dir.resolve() / 'test.txt'}, line 4: image not found: "
                f"{task_dir.resolve() / 'images/test/000003.jpg'}"):
        open_task(task_dir).samples("test")


def test_empty_split(tmp_path):
    task_dir = make_vtab(tmp_path, "tiny", num_classes=2)
    (task_dir / "val200.txt").write_text("\n  \n")
    with raises(f"{task_dir.resolve() / 'val200.txt'}: split 'val200' is empty"):
        open_task(task_dir).samples("val200")


def test_all_splits_empty(tmp_path):
    task_dir = make_vtab(tmp_path, "tiny", num_classes=2)
    for name in ("train800", "val200", "train800val200", "test"):
        (task_dir / f"{name}.txt").write_text("")
    with raises("the split files hold no samples"):
        open_task(task_dir)


def test_split_file_not_utf8(tmp_path):
    task_dir = make_vtab(tmp_path, "tiny", num_classes=2)
    (task_dir / "train800.txt").write_bytes(b"images/\xff\xfe.jpg 0\n")
    with raises(f"{task_dir.resolve() / 'train800.txt'}: not UTF-8"):
        open_task(task_dir)


# --- images that cannot be read: raised when the item is loaded ------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"this is not a jpeg", "truncated"])
def test_unreadable_image_names_the_image_and_its_line(tmp_path, content):
    task_dir = make_vtab(tmp_path, "tiny", num_classes=2)
    image = task_dir / "images/train800/000002.jpg"
    if content == "truncated":
        write_image(image, 0, 2, size=64)
        content = image.read_bytes()[:200]
    image.write_bytes(content)
    dataset = open_task(task_dir).dataset("train800")  # opening and checking do not decode images
    dataset[1]
    with raises(f"cannot read image {image.resolve()} ({task_dir.resolve() / 'train800.txt'}, line 3)"):
        dataset[2]


def test_unreadable_image_in_a_dataloader_worker_is_still_a_data_error(tmp_path):
    task_dir = make_vtab(tmp_path, "tiny", num_classes=2)
    (task_dir / "images/test/000000.jpg").write_bytes(b"garbage")
    loader = DataLoader(open_task(task_dir).dataset("test"), batch_size=2, num_workers=1,
                        collate_fn=lambda batch: batch)
    with raises("test.txt, line 1"):
        next(iter(loader))


def test_unreadable_image_in_an_image_folder_names_its_folder(tmp_path):
    task_dir = make_imagefolder(tmp_path, n_per_split=3, num_classes=3)
    (task_dir / "train/class_1/broken.png").write_bytes(b"\x89PNG broken")
    dataset = open_task(task_dir).dataset("train")
    index = [p.name for p, _ in dataset.samples].index("broken.png")
    with raises(f"cannot read image {(task_dir / 'train/class_1/broken.png').resolve()} "
                f"({(task_dir / 'train/class_1').resolve()})"):
        dataset[index]


# --- FGVC JSON -------------------------------------------------------------------------------------------------


def test_fgvc_json_syntax_error_names_line_and_column(tmp_path):
    task_dir = make_fgvc(tmp_path)
    (task_dir / "val.json").write_text('{\n  "a/1.jpg": 0,\n  "a/2.jpg" 1\n}\n')
    with raises(f"{task_dir.resolve() / 'val.json'}, line 3, column 13: invalid JSON"):
        open_task(task_dir)


@pytest.mark.parametrize("value", ['"3"', "1.5", "true", "null", '{"x": 1}'])
def test_fgvc_class_id_not_an_integer(tmp_path, value):
    task_dir = make_fgvc(tmp_path)
    (task_dir / "train.json").write_text('{\n  "a/1.jpg": 0,\n  "a/2.jpg": ' + value + "\n}\n")
    with raises(f"{task_dir.resolve() / 'train.json'}, line 3: class id of 'a/2.jpg' is {value}, not an integer"):
        open_task(task_dir)


def test_fgvc_image_listed_twice(tmp_path):
    task_dir = make_fgvc(tmp_path)
    (task_dir / "test.json").write_text('{"a/1.jpg": 0,\n "a/1.jpg": 1}')
    with raises("test.json, line 2: image 'a/1.jpg' is listed twice"):
        open_task(task_dir)


def test_fgvc_image_missing_under_both_roots(tmp_path):
    task_dir = make_fgvc(tmp_path, n_per_split=3)
    entries = json.loads((task_dir / "train.json").read_text())
    (task_dir / "train.json").write_text(json.dumps({"gone/x.jpg": 0, **entries}, indent=1))
    root = task_dir.resolve()
    with raises(f"train.json, line 2: image 'gone/x.jpg' not found (looked for {root / 'images/gone/x.jpg'}, "
                f"{root / 'gone/x.jpg'})"):
        open_task(task_dir).samples("train")


def test_fgvc_later_image_missing_names_its_line(tmp_path):
    task_dir = make_fgvc(tmp_path, n_per_split=3)
    entries = json.loads((task_dir / "train.json").read_text())
    (task_dir / "images" / list(entries)[2]).unlink()
    with raises(f"{task_dir.resolve() / 'train.json'}, line 4: image not found"):
        open_task(task_dir).samples("train")


# --- image folders ---------------------------------------------------------------------------------------------


def test_image_folder_class_absent_from_train(tmp_path):
    task_dir = make_imagefolder(tmp_path, num_classes=2)
    write_image(task_dir / "test/zebra/1.png", 0, 2)
    with raises(f"{(task_dir / 'test/zebra').resolve()}: class 'zebra' has no folder in"):
        open_task(task_dir)


def test_image_folder_train_class_without_images(tmp_path):
    task_dir = make_imagefolder(tmp_path, num_classes=2)
    (task_dir / "train/class_9").mkdir()
    with raises(f"{(task_dir / 'train/class_9').resolve()}: no images"):
        open_task(task_dir).samples("train")


def test_image_folder_without_classes_or_evaluation_split(tmp_path):
    (tmp_path / "a/train").mkdir(parents=True)
    with raises("train: no class folders"):
        open_task(tmp_path / "a")
    task_dir = make_imagefolder(tmp_path, splits=("train",))
    with raises(f"{task_dir.resolve()}: no test/ or val/ folder to evaluate on"):
        open_task(task_dir)


def test_image_folder_empty_split(tmp_path):
    task_dir = make_imagefolder(tmp_path, splits=("train",))
    (task_dir / "test").mkdir()
    with raises(f"{(task_dir / 'test').resolve()}: split 'test' is empty"):
        open_task(task_dir).samples("test")


# --- few-shot lists --------------------------------------------------------------------------------------------


def test_few_shot_list_missing_names_the_file_expected(tmp_path):
    task_dir = make_few_shot(tmp_path, shots=(1, 2), seeds=(0,))
    expected = task_dir.resolve() / "annotations" / "train_meta.list.num_shot_8.seed_0"
    with raises(f"few-shot list missing: {expected} (lists present for (shots, seed): (1, 0), (2, 0))"):
        open_task(task_dir, few_shot=(8, 0))


def test_few_shot_folder_needs_a_choice(tmp_path):
    task_dir = make_few_shot(tmp_path, shots=(1,), seeds=(0, 1))
    with raises("holds NOAH few-shot lists: choose one with few_shot=(shots, seed) (present: (1, 0), (1, 1))"):
        open_task(task_dir)


def test_few_shot_asked_of_a_folder_without_lists(tmp_path):
    with raises("few_shot=(1, 0) asks for NOAH few-shot lists"):
        open_task(make_vtab(tmp_path, "tiny"), few_shot=(1, 0))


@pytest.mark.parametrize("bad", [1, (1,), (0, 0), (1, -1), ("1", 0), (True, 0)])
def test_few_shot_argument_must_be_a_shots_seed_pair(tmp_path, bad):
    with raises("few_shot must be"):
        open_task(make_few_shot(tmp_path), few_shot=bad)


def test_few_shot_malformed_line_and_missing_image(tmp_path):
    task_dir = make_few_shot(tmp_path, shots=(1,), num_classes=2)
    test_list = task_dir / "annotations/test_meta.list"
    test_list.write_text("test_0000.jpg 0\ntest_0001.jpg\n")
    with raises(f"{test_list.resolve()}, line 2: expected '<image path> <integer label>'"):
        open_task(task_dir, few_shot=(1, 0))
    test_list.write_text("test_0000.jpg 0\nnot_there.jpg 1\n")
    with raises(f"{test_list.resolve()}, line 2: image not found"):
        open_task(task_dir, few_shot=(1, 0)).samples("test_meta.list")


@pytest.mark.parametrize("text", ["[]", '[["a/1.jpg", 0]]', "3"])
def test_fgvc_split_must_be_an_object(tmp_path, text):
    task_dir = make_fgvc(tmp_path)
    (task_dir / "val.json").write_text(text)
    with raises(f"{task_dir.resolve() / 'val.json'}: expected a JSON object"):
        open_task(task_dir)
