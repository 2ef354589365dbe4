"""Class counts of the public benchmark tasks, looked up by the task's folder name.

A task's labels need not show every class (a few-shot list, a tiny test copy), so a known benchmark task
takes its published count instead of the largest label + 1.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

# VTAB-1k, under both the NOAH/RepAdapter/ARC folder names and Consolidator's: the class_num of RepAdapter's
# configs/repblock/*.yaml, ARC's Data_process/VTAB_config.py and Consolidator's lib/datasets.py, which agree.
KNOWN_VTAB_CLASSES: Mapping[str, int] = MappingProxyType({
    "cifar": 100, "cifar100": 100,
    "caltech101": 102,
    "dtd": 47,
    "oxford_flowers102": 102,
    "oxford_iiit_pet": 37, "oxford_pet": 37,
    "svhn": 10,
    "sun397": 397,
    "patch_camelyon": 2,
    "eurosat": 10,
    "resisc45": 45,
    "diabetic_retinopathy": 5,
    "clevr_count": 8,
    "clevr_dist": 6,
    "dmlab": 6,
    "kitti": 4,
    "dsprites_loc": 16,
    "dsprites_ori": 16,
    "smallnorb_azi": 18,
    "smallnorb_ele": 9,
})

# NOAH's few-shot tasks, under NOAH's folder names (data/few-shot/<name>) and RepAdapter's.
KNOWN_FEW_SHOT_CLASSES: Mapping[str, int] = MappingProxyType({
    "fgvc-aircraft": 100, "fgvc_aircraft": 100,
    "food101": 101, "food-101": 101,
    "oxford-flowers102": 102, "oxford_flowers102": 102,
    "oxford-pets": 37, "oxford_pets": 37,
    "standford-cars": 196, "standford_cars": 196, "stanford-cars": 196, "stanford_cars": 196,
    "imagenet": 1000,
})
