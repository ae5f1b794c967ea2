"""Model files that are broken, incomplete or in unwritable places: clear errors, never a crash.

A broken GGUF handed to OpenVINO GenAI kills the process (exit 139), so each case here reaching the runtime would
take the test run down with it: passing means the resolver stopped it first.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from phi3_aipc import GenerationParams, get_engine
from phi3_aipc.engine import clear_engines
from phi3_aipc.errors import CacheNotWritableError, InvalidModelFileError
from phi3_aipc.models import resolve

pytest.importorskip("openvino_genai")
pytest.importorskip("gguf")

FORCED = GenerationParams(max_new_tokens=3, ignore_eos=True)
TOKENIZER_IR = (
    "openvino_tokenizer.xml",
    "openvino_tokenizer.bin",
    "openvino_detokenizer.xml",
    "openvino_detokenizer.bin",
)
HF_TOKENIZER = ("tokenizer.json", "tokenizer_config.json")


@pytest.fixture(autouse=True)
def _fresh_engines():
    clear_engines()
    yield
    clear_engines()


# -- GGUF --------------------------------------------------------------------------------------------------------
def _truncated(source: Path, out: Path) -> Path:
    with source.open("rb") as f:
        out.write_bytes(f.read(1 << 20))
    return out


def _broken_header(source: Path, out: Path) -> Path:
    # The magic and version are right; the tensor and key counts are nonsense.
    out.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 10**12, 5) + bytes(64))
    return out


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (_truncated, "not a valid GGUF"),
        (_broken_header, "not a valid GGUF"),
        (lambda _, out: (out.write_text("hello, I am not a model\n"), out)[1], "GGUF magic invalid"),
        (lambda _, out: (out.write_bytes(b""), out)[1], "is empty"),
    ],
    ids=["truncated-1MB", "broken-header", "text", "zero-byte"],
)
def test_broken_gguf_is_refused_before_openvino_sees_it(
    make, what: str, smollm2_gguf: Path, tmp_path: Path
) -> None:
    broken = make(smollm2_gguf, tmp_path / "model.gguf")
    with pytest.raises(InvalidModelFileError, match=what) as info:
        get_engine(str(broken), "cpu")
    assert str(broken) in str(info.value)


def _with_hyperparameter(source: Path, out: Path, key: str, value: float) -> Path:
    """A copy of ``source`` whose metadata ``key`` reads ``value``: the reader accepts it, the model is impossible."""
    from gguf import GGUFReader

    shutil.copyfile(source, out)
    reader = GGUFReader(out, "r+")
    field = reader.fields[key]
    field.parts[field.data[0]][0] = value
    reader.data.flush()
    del reader
    return out


#: Each once crashed the process (SIGFPE) or gave a raw error inside OpenVINO GenAI's GGUF reader (issue 23 item 10).
IMPOSSIBLE_HYPERPARAMETERS = {
    "head_count-0": ("llama.attention.head_count", 0, "attention.head_count is 0"),
    "embedding_length-1": ("llama.embedding_length", 1, "embedding_length \\(1\\) is not a multiple"),
    "head_count_kv-0": ("llama.attention.head_count_kv", 0, "head_count_kv is 0"),
    "head_count-7": ("llama.attention.head_count", 7, "must divide attention.head_count \\(7\\)"),
    "block_count-31": ("llama.block_count", 31, "block_count is 31, but the file holds 30 layers"),
    "rms_epsilon-0": ("llama.attention.layer_norm_rms_epsilon", 0.0, "layer_norm_rms_epsilon is 0.0"),
}


@pytest.mark.smollm2
@pytest.mark.parametrize("name", sorted(IMPOSSIBLE_HYPERPARAMETERS))
def test_a_gguf_with_impossible_hyperparameters_is_refused_not_a_crash(
    name: str, smollm2_gguf: Path, tmp_path: Path
) -> None:
    key, value, what = IMPOSSIBLE_HYPERPARAMETERS[name]
    broken = _with_hyperparameter(smollm2_gguf, tmp_path / "model.gguf", key, value)
    # In a child process: before the check, this load killed the process, which would take the test run with it.
    child = subprocess.run(
        [sys.executable, "-c", LOAD_AND_REPORT, str(broken)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PHI3_AIPC_CACHE": str(tmp_path / "cache")},
    )
    assert child.returncode == 0, f"the load died (exit {child.returncode}): {child.stderr[-500:]}"
    kind, _, message = child.stdout.strip().splitlines()[-1].partition(": ")
    assert kind == "InvalidModelFileError" and str(broken) in message
    assert re.search(what, message), message


LOAD_AND_REPORT = """
import sys
from phi3_aipc import get_engine
try:
    get_engine(sys.argv[1], "cpu")
    print("loaded: no error")
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}")
"""


@pytest.mark.smollm2
def test_the_gguf_states_its_context_window_and_special_tokens(smollm2_gguf: Path) -> None:
    from phi3_aipc.models.files import read_facts

    facts = read_facts(smollm2_gguf, "gguf")
    assert facts.context_window == 8192 and facts.model_type == "llama"
    # The packaged GGUF runs from its IR conversion, which keeps what the GGUF said.
    artifact = resolve(str(smollm2_gguf), "CPU", "openvino")
    assert artifact.format == "openvino-ir" and artifact.model_id == "smollm2"
    assert artifact.context_window == 8192
    assert {"<|im_start|>", "<|im_end|>", "<|endoftext|>"} <= artifact.special_tokens
    assert "hello" not in artifact.special_tokens


# -- OpenVINO IR folders -----------------------------------------------------------------------------------------
# -- a Hugging Face checkpoint's config.json ------------------------------------------------------------------------
def _edited_config(edit):
    def write(config: Path) -> None:
        data = json.loads(config.read_text())
        edit(data)
        config.write_text(json.dumps(data))

    return write


BROKEN_CONFIGS = {
    "truncated": (lambda c: c.write_text(c.read_text()[:100]), "cannot be read as JSON"),
    "not-utf8": (lambda c: c.write_bytes(b"\xff\xfe{"), "cannot be read as JSON"),
    "a-list": (lambda c: c.write_text("[1, 2]"), "holds a JSON list, not an object"),
    "no-model-type": (_edited_config(lambda d: d.pop("model_type")), "'model_type' is None"),
    "unknown-model-type": (_edited_config(lambda d: d.update(model_type="nonsense")), "nonsense"),
    "wrong-field-type": (_edited_config(lambda d: d.update(hidden_size="big")), "hidden_size"),
}


@pytest.mark.parametrize("backend", ["transformers", "openvino"])
@pytest.mark.parametrize("broken", sorted(BROKEN_CONFIGS))
def test_a_broken_config_json_is_a_typed_error_naming_the_file(
    tiny_phi3_hf: Path, tmp_path: Path, backend: str, broken: str
) -> None:
    """Issue 23 item 13: transformers' raw OSError / TypeError / ValueError become one error naming config.json
    (the openvino backend would export the checkpoint: the config is read before the exporter runs)."""
    folder = Path(shutil.copytree(tiny_phi3_hf, tmp_path / "hf"))
    edit, what = BROKEN_CONFIGS[broken]
    edit(folder / "config.json")
    with pytest.raises(InvalidModelFileError, match=what) as info:
        get_engine(str(folder), "cpu", backend=backend)
    assert f"{folder / 'config.json'}' is not a usable model config" in str(info.value)


def test_ir_without_any_tokenizer_names_the_folder(tiny_phi3_ov: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(tiny_phi3_ov, tmp_path / "ir"))
    for name in (*TOKENIZER_IR, *HF_TOKENIZER):
        (folder / name).unlink()
    with pytest.raises(InvalidModelFileError, match="has no tokenizer") as info:
        get_engine(str(folder), "cpu")
    assert str(folder) in str(info.value) and "phi3-aipc export" in str(info.value)


@pytest.mark.parametrize("damage", ["truncated weights", "xml that is not xml"])
def test_a_damaged_ir_names_the_folder_instead_of_openvinos_internals(
    tiny_phi3_ov: Path, tmp_path: Path, damage: str
) -> None:
    folder = Path(shutil.copytree(tiny_phi3_ov, tmp_path / "ir"))
    if damage == "truncated weights":
        weights = folder / "openvino_model.bin"
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        (folder / "openvino_model.xml").write_text("this is not an IR")
    with pytest.raises(
        InvalidModelFileError, match=r"could not read the model in .*ir.*export the model again"
    ):
        get_engine(str(folder), "cpu")


def test_ir_without_tokenizer_ir_gets_one_with_no_temporary_files_left(
    tiny_phi3_ov: Path, tmp_path: Path
) -> None:
    folder = Path(shutil.copytree(tiny_phi3_ov, tmp_path / "ir"))
    for name in TOKENIZER_IR:
        (folder / name).unlink()
    before = {p.name for p in folder.iterdir()}
    engine = get_engine(str(folder), "cpu")
    assert engine.generate("Hello", FORCED).completion_tokens == 3
    assert {p.name for p in folder.iterdir()} == before | set(TOKENIZER_IR)


def test_ir_without_tokenizer_ir_in_a_read_only_folder_says_how_to_fix_it(
    tiny_phi3_ov: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = Path(shutil.copytree(tiny_phi3_ov, tmp_path / "ir"))
    for name in TOKENIZER_IR:
        (folder / name).unlink()

    import tempfile

    real_mkdtemp = tempfile.mkdtemp

    def read_only(suffix=None, prefix=None, dir=None):  # noqa: A002 - tempfile's own parameter name
        # Test double for a read-only model folder (the suite may run as root, which chmod does not stop).
        if dir is not None and Path(dir) == folder:
            raise PermissionError(13, "Permission denied")
        return real_mkdtemp(suffix, prefix, dir)

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    with pytest.raises(
        InvalidModelFileError, match="cannot be written there.*Make the folder writable"
    ) as info:
        get_engine(str(folder), "cpu")
    assert str(folder) in str(info.value)


# -- an unwritable PHI3_AIPC_CACHE -------------------------------------------------------------------------------
@pytest.fixture
def unwritable_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PHI3_AIPC_CACHE that cannot be created: its parent is a file (this works for root too, unlike chmod)."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    cache = blocker / "cache"
    monkeypatch.setenv("PHI3_AIPC_CACHE", str(cache))
    return cache


def test_model_loads_when_only_the_compile_cache_cannot_be_written(
    unwritable_cache: Path, tiny_phi3_ov: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="phi3_aipc.paths"):
        engine = get_engine(str(tiny_phi3_ov), "cpu")
    assert engine.generate("Hello", FORCED).completion_tokens == 3
    assert "CACHE_DIR" not in engine.backend._config
    assert "without a compile cache" in caplog.text and str(unwritable_cache) in caplog.text


def test_an_export_into_an_unwritable_cache_names_the_directory(
    unwritable_cache: Path, tiny_phi3_hf: Path
) -> None:
    with pytest.raises(CacheNotWritableError, match="PHI3_AIPC_CACHE") as info:
        get_engine(str(tiny_phi3_hf), "cpu")
    assert str(unwritable_cache) in str(info.value)


@pytest.mark.smollm2
def test_the_packaged_gguf_loads_itself_when_its_ir_cannot_be_written(
    unwritable_cache: Path, smollm2_gguf: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from phi3_aipc.models import resolve

    with caplog.at_level(logging.WARNING, logger="phi3_aipc.models.resolve"):
        artifact = resolve("smollm2", "CPU", "openvino")
    assert artifact.format == "gguf" and artifact.path.resolve() == smollm2_gguf.resolve()
    assert "Loading the GGUF itself" in caplog.text and str(unwritable_cache) in caplog.text
    with pytest.raises(CacheNotWritableError, match="PHI3_AIPC_CACHE"):
        resolve("smollm2", "NPU", "openvino")  # the NPU pipeline cannot run the GGUF itself


def test_without_the_gguf_package_a_gguf_is_not_loaded_unchecked(
    smollm2_gguf: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sys

    # A GGUF of the user's own (the packaged one may already be converted to an IR in the cache).
    mine = shutil.copyfile(smollm2_gguf, tmp_path / "mine.gguf")
    from phi3_aipc.errors import BackendNotInstalledError
    from phi3_aipc.models import files

    files._gguf_facts.cache_clear()  # forget earlier checks of this file
    monkeypatch.setitem(sys.modules, "gguf", None)  # as if the package were not installed
    with pytest.raises(BackendNotInstalledError, match=r"'gguf' package.*pip install -e \"\.\[openvino\]\""):
        get_engine(str(mine), "cpu")
