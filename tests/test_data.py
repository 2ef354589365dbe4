"""vitune.data on tiny data sets written by the test: layouts, splits, classes, few-shot lists, datasets."""

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from datasets import make_few_shot, make_fgvc, make_imagefolder, make_vtab, write_image
from vitune.data import KNOWN_FEW_SHOT_CLASSES, KNOWN_VTAB_CLASSES, TaskData, build_transforms, open_task
from vitune.errors import DataError

# --- VTAB-1k -------------------------------------------------------------------------------------------------


def test_vtab_is_detected_with_the_protocol_defaults(tmp_path):
    task = open_task(make_vtab(tmp_path, "cifar", n_per_split=4, num_classes=3))
    assert isinstance(task, TaskData)
    assert task.layout == "vtab" and task.name == "cifar" and task.root == (tmp_path / "cifar").resolve()
    assert task.splits == ("train800", "val200", "train800val200", "test")
    assert (task.default_train, task.default_eval) == ("train800val200", "test")
    samples = task.samples("train800val200")
    assert len(samples) == 8 and [label for _, label in samples] == [0, 1, 2, 0, 1, 2, 0, 1]
    assert samples[0][0] == task.root / "images/train800val200/000000.jpg"
    assert all(path.is_file() for path, _ in samples)


def test_vtab_known_task_names_give_their_own_class_count(tmp_path):
    assert open_task(make_vtab(tmp_path, "cifar", num_classes=3)).num_classes == 100
    assert open_task(make_vtab(tmp_path, "oxford_pet", num_classes=3)).num_classes == 37  # Consolidator's name
    assert open_task(make_vtab(tmp_path, "oxford_iiit_pet", num_classes=3)).num_classes == 37  # NOAH's name


def test_known_vtab_table_matches_the_official_configs():
    noah = ["cifar", "caltech101", "dtd", "oxford_flowers102", "oxford_iiit_pet", "svhn", "sun397",
            "patch_camelyon", "eurosat", "resisc45", "diabetic_retinopathy", "clevr_count", "clevr_dist",
            "dmlab", "kitti", "dsprites_loc", "dsprites_ori", "smallnorb_azi", "smallnorb_ele"]
    # the class_num of RepAdapter's configs/repblock/*.yaml (and ARC's, Consolidator's): 940 over 19 tasks
    assert sum(KNOWN_VTAB_CLASSES[name] for name in noah) == 940
    assert KNOWN_VTAB_CLASSES["cifar100"] == KNOWN_VTAB_CLASSES["cifar"] == 100
    assert KNOWN_VTAB_CLASSES["oxford_pet"] == KNOWN_VTAB_CLASSES["oxford_iiit_pet"] == 37


def test_vtab_unknown_name_counts_the_largest_label_over_all_splits(tmp_path):
    task_dir = make_vtab(tmp_path, "tiny", num_classes=3)
    with open(task_dir / "test.txt", "a") as f:
        f.write("images/test/000000.jpg 6\n")  # a label only the test split holds
    task = open_task(task_dir)
    assert task.num_classes == 7
    assert task.describe()["num_classes_from"] == "largest label + 1"


def test_vtab_lines_tolerate_blank_lines_whitespace_and_spaces_in_paths(tmp_path):
    task_dir = make_vtab(tmp_path, "tiny", num_classes=2)
    write_image(task_dir / "images" / "my image.jpg", 1, 2)
    (task_dir / "train800.txt").write_text(
        "\n  images/train800/000000.jpg 0   \r\n\n\timages/my image.jpg\t1\n   \n"
    )
    samples = open_task(task_dir).samples("train800")
    assert samples == [(task_dir.resolve() / "images/train800/000000.jpg", 0),
                       (task_dir.resolve() / "images/my image.jpg", 1)]


def test_vtab_with_only_some_split_files(tmp_path):
    task_dir = make_vtab(tmp_path, "tiny", num_classes=2)
    (task_dir / "train800.txt").unlink()
    (task_dir / "val200.txt").unlink()
    assert open_task(task_dir).splits == ("train800val200", "test")


# --- FGVC ------------------------------------------------------------------------------------------------------


def test_fgvc_class_ids_are_remapped_in_sorted_order(tmp_path):
    task = open_task(make_fgvc(tmp_path, "CUB_200_2011", n_per_split=6, num_classes=3, class_ids=[3, 7, 20]))
    assert task.layout == "fgvc" and task.num_classes == 3
    assert task.splits == ("train", "val", "test", "trainval")
    assert (task.default_train, task.default_eval) == ("train", "test")
    assert [label for _, label in task.samples("train")] == [0, 1, 2, 0, 1, 2]
    assert task.describe()["class_ids"] == [3, 7, 20]


def test_fgvc_counts_ids_over_all_splits(tmp_path):
    task_dir = make_fgvc(tmp_path, "NABirds", n_per_split=3, num_classes=3, class_ids=[10, 20, 30])
    test = json.loads((task_dir / "test.json").read_text())
    write_image(task_dir / "images/015.extra/x.jpg", 0, 3)
    (task_dir / "test.json").write_text(json.dumps({**test, "015.extra/x.jpg": 15}))
    task = open_task(task_dir)
    assert task.num_classes == 4 and task.describe()["class_ids"] == [10, 15, 20, 30]
    assert [label for _, label in task.samples("train")] == [0, 2, 3]  # 10 -> 0, 20 -> 2, 30 -> 3
    assert dict((p.name, label) for p, label in task.samples("test"))["x.jpg"] == 1


@pytest.mark.parametrize("image_root", ["images", "."])
def test_fgvc_images_under_images_or_the_dataset_root(tmp_path, image_root):
    task_dir = make_fgvc(tmp_path, "StanfordCars", image_root=image_root)
    task = open_task(task_dir)
    base = task.root / "images" if image_root == "images" else task.root
    assert all(path.parent.parent == base for path, _ in task.samples("test"))
    image, label = task.dataset("test")[0]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and label == 0


def test_fgvc_trainval_is_optional(tmp_path):
    task = open_task(make_fgvc(tmp_path, trainval=False))
    assert task.splits == ("train", "val", "test")


# --- image folder ----------------------------------------------------------------------------------------------


def test_image_folder_classes_are_the_sorted_train_folders(tmp_path):
    task_dir = make_imagefolder(tmp_path, "pets", n_per_split=6, num_classes=3)
    (task_dir / "train" / "class_1" / "notes.txt").write_text("not an image")
    (task_dir / "train" / ".ipynb_checkpoints").mkdir()
    write_image(task_dir / "train" / "class_2" / "nested" / "deep.PNG", 2, 3)
    task = open_task(task_dir)
    assert task.layout == "imagefolder" and task.num_classes == 3
    assert task.describe()["classes"] == ["class_0", "class_1", "class_2"]
    assert task.splits == ("train", "val", "test")
    assert (task.default_train, task.default_eval) == ("train", "test")
    train = task.samples("train")
    assert len(train) == 7 and sorted(label for _, label in train) == [0, 0, 1, 1, 2, 2, 2]


def test_image_folder_evaluates_on_val_without_test(tmp_path):
    task = open_task(make_imagefolder(tmp_path, splits=("train", "val")))
    assert task.splits == ("train", "val") and task.default_eval == "val"


def test_image_folder_val_may_lack_classes(tmp_path):
    task_dir = make_imagefolder(tmp_path, n_per_split=3, num_classes=3, splits=("train",))
    write_image(task_dir / "val" / "class_2" / "a.png", 2, 3)
    assert open_task(task_dir).samples("val") == [((task_dir / "val/class_2/a.png").resolve(), 2)]


# --- NOAH few-shot lists ---------------------------------------------------------------------------------------


def test_few_shot_selects_the_list_of_shots_and_seed(tmp_path):
    task_dir = make_few_shot(tmp_path, "pets_fs", shots=(1, 2), seeds=(0, 1), num_classes=3)
    task = open_task(task_dir, few_shot=(2, 1))
    assert task.layout == "fewshot" and task.num_classes == 3 and task.few_shot == (2, 1)
    assert task.splits == ("train_meta.list.num_shot_2.seed_1", "val_meta.list", "test_meta.list")
    assert (task.default_train, task.default_eval) == ("train_meta.list.num_shot_2.seed_1", "test_meta.list")
    train = task.samples(task.default_train)
    assert len(train) == 6 and sorted(label for _, label in train) == [0, 0, 1, 1, 2, 2]
    assert all(path.parent == task.root / "images" for path, _ in train)
    assert len(open_task(task_dir, few_shot=(1, 0)).samples("train_meta.list.num_shot_1.seed_0")) == 3
    described = task.describe()
    assert described["few_shot"] == {"shots": 2, "seed": 1}
    assert described["split_files"]["test_meta.list"] == "annotations/test_meta.list"


def test_few_shot_known_task_name_gives_its_class_count(tmp_path):
    task = open_task(make_few_shot(tmp_path, "oxford-pets"), few_shot=(1, 0))
    assert task.num_classes == KNOWN_FEW_SHOT_CLASSES["oxford-pets"] == 37


def test_few_shot_repadapter_layout_lists_in_the_task_folder(tmp_path):
    """RepAdapter reads the lists from the task folder and the images from images/train and images/test."""
    root = tmp_path / "food101"
    for i, label in enumerate([0, 1]):
        write_image(root / "images/train" / f"c{label}/{i}.jpg", label, 2)
        write_image(root / "images/test" / f"c{label}/{i}.jpg", label, 2)
    (root / "train_meta.list.num_shot_1.seed_0").write_text("c0/0.jpg 0\nc1/1.jpg 1\n")
    (root / "test_meta.list").write_text("c0/0.jpg 0\nc1/1.jpg 1\n")
    task = open_task(root, few_shot=(1, 0))
    assert task.splits == ("train_meta.list.num_shot_1.seed_0", "test_meta.list")
    assert task.num_classes == 101  # food101 is a known few-shot task
    assert task.samples("train_meta.list.num_shot_1.seed_0")[0][0] == root.resolve() / "images/train/c0/0.jpg"
    assert task.samples("test_meta.list")[1][0] == root.resolve() / "images/test/c1/1.jpg"


def test_few_shot_cars_images_relative_to_the_task_folder(tmp_path):
    root = tmp_path / "cars_fs"
    write_image(root / "cars_train/00001.jpg", 0, 2)
    write_image(root / "cars_test/00001.jpg", 1, 2)
    (root / "annotations").mkdir()
    (root / "annotations/train_meta.list.num_shot_1.seed_0").write_text("cars_train/00001.jpg 0\n")
    (root / "annotations/test_meta.list").write_text("cars_test/00001.jpg 1\n")
    task = open_task(root, few_shot=(1, 0))
    assert task.num_classes == 2
    assert task.samples("test_meta.list") == [(root.resolve() / "cars_test/00001.jpg", 1)]


# --- datasets and describe() -----------------------------------------------------------------------------------


def test_dataset_items_are_transformed_rgb_images_and_int_labels(tmp_path):
    task = open_task(make_vtab(tmp_path, "tiny", n_per_split=4, num_classes=2, size=16))
    train_tf, _, _ = build_transforms("vtab", img_size=32)
    dataset = task.dataset("train800", train_tf)
    assert len(dataset) == 4 and dataset.targets == [0, 1, 0, 1]
    assert dataset.samples == task.samples("train800")
    image, label = dataset[1]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == 1 and type(label) is int
    images, labels = next(iter(DataLoader(dataset, batch_size=4)))
    assert images.shape == (4, 3, 32, 32) and labels.tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK"])
def test_dataset_converts_every_image_mode_to_rgb(tmp_path, mode):
    task_dir = make_vtab(tmp_path, "tiny", n_per_split=2, num_classes=2)
    path = task_dir / "images/train800/000000.jpg"
    suffix = ".jpg" if mode in ("L", "CMYK") else ".png"
    Image.new("RGB", (8, 8), (200, 100, 50)).convert(mode).save(path.with_suffix(suffix))
    (task_dir / "train800.txt").write_text(f"images/train800/000000{suffix} 0\nimages/train800/000001.jpg 1\n")
    image, _ = open_task(task_dir).dataset("train800")[0]
    assert image.mode == "RGB" and image.size == (8, 8)


def _draw_global() -> tuple[float, float, float]:
    return float(torch.rand(1)), random.random(), float(np.random.random())


def test_seeded_dataset_repeats_its_augmentation_per_epoch_and_item(tmp_path):
    task = open_task(make_fgvc(tmp_path, n_per_split=3, size=16))
    train_tf, _, _ = build_transforms("fgvc", img_size=16)
    first, again = task.dataset("train", train_tf, seed=5), task.dataset("train", train_tf, seed=5)
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    items = [first[i][0] for i in range(3)]
    after = _draw_global()
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    assert _draw_global() == after  # the global generators are left as they were
    assert all(torch.equal(again[i][0], items[i]) for i in (2, 1, 0))  # another copy, another order
    assert torch.equal(again[-1][0], items[2])
    first.set_epoch(1)
    assert not all(torch.equal(first[i][0], items[i]) for i in range(3))  # a new epoch, new crops


def test_describe_is_json_ready(tmp_path):
    for task in (open_task(make_vtab(tmp_path)), open_task(make_fgvc(tmp_path)),
                 open_task(make_imagefolder(tmp_path)), open_task(make_few_shot(tmp_path), few_shot=(1, 0))):
        described = task.describe()
        assert json.loads(json.dumps(described)) == described
        assert {"root", "name", "layout", "num_classes", "splits", "default_train", "default_eval",
                "few_shot", "split_files"} <= set(described)
        assert described["layout"] == task.layout and described["num_classes"] == task.num_classes


def test_data_error_is_a_value_error(tmp_path):
    with pytest.raises(ValueError):
        open_task(tmp_path / "nowhere")
    with pytest.raises(DataError):
        open_task(tmp_path / "nowhere")
