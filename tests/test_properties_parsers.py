"""Property tests (hypothesis): random input to vitune's parsers raises nothing but the documented errors.

Split files (lines and FGVC JSON) -> DataError; YAML recipes and run settings -> ConfigError/RunError (any
VituneError of exit code 2); `--set`/`--model-kwargs` pairs and method configs -> VituneError/ConfigError;
adapter_config.json -> AdapterFileError."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vitune
from helpers import make_backbone
from vitune.cli import _config_pairs
from vitune.data import open_task
from vitune.data.list_file import parse_list_file
from vitune.errors import AdapterFileError, ConfigError, DataError, VituneError, exit_code
from vitune.methods import get_method
from vitune.train.config import load_recipe, resolve_config

# 60 examples each in the suite (a few seconds); VITUNE_PROPERTY_EXAMPLES=2000 for a longer hunt
FAST = settings(max_examples=int(os.environ.get("VITUNE_PROPERTY_EXAMPLES", "60")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# text that looks like split lines: paths, labels, separators and junk
line_tokens = st.sampled_from(["images/a.jpg", "a.jpg", "0", "1", "-1", "7", "1.5", "cat", " ", "\t", "\n",
                               "\r\n", "#", "\x00", "é", "../../etc/passwd", "99999999999999999999"])
split_text = st.lists(line_tokens, max_size=30).map("".join) | st.text(max_size=200)


@pytest.fixture(scope="module")
def scratch():
    folder = Path(tempfile.mkdtemp())
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@FAST
@given(content=split_text | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_split_lines_parse_or_raise_data_error(scratch, content):
    path = scratch / "list.txt"
    path.write_bytes(content.encode("utf-8", "surrogatepass"))
    try:
        parse_list_file(path)
    except DataError:
        pass


@FAST
@given(splits=st.fixed_dictionaries({name: split_text for name in ("train800", "val200", "train800val200", "test")}))
def test_vtab_task_with_random_split_files_raises_only_data_errors(scratch, splits):
    task = scratch / "vtab" / "tiny"
    shutil.rmtree(task, ignore_errors=True)
    (task / "images").mkdir(parents=True)
    (task / "images" / "a.jpg").write_bytes(b"")
    for name, text in splits.items():
        (task / f"{name}.txt").write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        opened = open_task(task)
        for name in opened.splits:
            opened.samples(name)
    except DataError:
        pass


@FAST
@given(document=json_values.map(json.dumps) | st.text(max_size=80))
def test_fgvc_json_split_raises_only_data_errors(scratch, document):
    task = scratch / "fgvc" / "CUB_200_2011"
    shutil.rmtree(task, ignore_errors=True)
    (task / "images" / "001.a").mkdir(parents=True)
    (task / "images" / "001.a" / "x.jpg").write_bytes(b"")
    for name in ("train", "val", "test"):
        (task / f"{name}.json").write_text(document if name == "train" else '{"001.a/x.jpg": 1}')
    try:
        open_task(task).samples("train")
    except DataError:
        pass


yaml_text = st.one_of(
    st.text(max_size=120),
    st.dictionaries(st.sampled_from(["method", "lr", "epochs", "datasets", "method_config", "model_kwargs",
                                     "seed", "unknown", "description"]), json_values, max_size=5).map(json.dumps),
    st.lists(st.sampled_from(["method: lora\n", "lr: [1, 2]\n", "datasets:\n", "  tiny: {lr: x}\n", "- 1\n",
                              "epochs: !!python/name:os.system\n", "&a [*a]\n", "lr: .inf\n", ": :\n", "\t"]),
             max_size=6).map("".join),
)


@FAST
@given(text=yaml_text)
def test_yaml_recipes_raise_only_configuration_errors(scratch, text):
    path = scratch / "recipe.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_recipe(str(path))
        resolve_config({"recipe": str(path), "data": str(scratch), "model": "m", "method": "lora"})
    except VituneError as e:
        assert exit_code(e) == 2, e


pair_text = st.text(max_size=20) | st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["r", "alpha", "dropout",
                                                                                         "targets", "", "x"]),
                                             json_values.map(json.dumps) | st.text(max_size=10))


@FAST
@given(pairs=st.lists(pair_text, max_size=4), method=st.sampled_from(vitune.methods()))
def test_set_pairs_and_method_configs_raise_only_configuration_errors(pairs, method):
    try:
        values = _config_pairs(pairs)
        _config_pairs(pairs, "--model-kwargs")
        cls = get_method(method)
        cls.Config.from_dict(values, method=method, source="--set")
    except ConfigError:
        pass
    except VituneError as e:
        assert "expects KEY=VALUE" in str(e)


@FAST
@given(flags=st.dictionaries(st.sampled_from(["lr", "epochs", "batch_size", "selection", "few_shot", "img_size",
                                               "method_config", "model_kwargs", "head", "seed", "lrr"]),
                             json_values, max_size=4))
def test_run_settings_raise_only_configuration_errors(scratch, flags):
    try:
        resolve_config({"data": str(scratch), "model": "m", "method": "lora", **flags})
    except VituneError as e:
        assert exit_code(e) == 2, e


@pytest.fixture(scope="module")
def saved_config(scratch):
    model = vitune.apply(make_backbone(), "lora")
    vitune.save_adapter(model, scratch / "adapter")
    return json.loads((scratch / "adapter" / "adapter_config.json").read_text())


@FAST
@given(data=st.data())
def test_adapter_config_reader_raises_only_adapter_file_errors(scratch, saved_config, data):
    """A random file, or the saved config with one entry (top level or nested) replaced by a random value."""
    folder = scratch / "adapter"
    config = json.loads(json.dumps(saved_config))
    if data.draw(st.booleans()):
        text = data.draw(st.text(max_size=80) | json_values.map(json.dumps))
    else:
        section = data.draw(st.sampled_from([None, "config", "backbone"]))
        target = config if section is None else config[section]
        key = data.draw(st.sampled_from(sorted(target) + ["extra"]))
        target[key] = data.draw(json_values)
        text = json.dumps(config)
    (folder / "adapter_config.json").write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        vitune.io.read_adapter_config(folder)
        vitune.load_adapter(make_backbone(), folder)
    except AdapterFileError:
        pass
