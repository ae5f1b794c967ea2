"""The shared engine cache keys on what was resolved, so every spelling of one model on one device is one engine;
plus the load-time checks that run before it (model, options, trust_remote_code, revision) and special tokens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from phi3_aipc import GenerationParams, InvalidParameterError, ModelNotFoundError, get_engine
from phi3_aipc.backends import load_backend
from phi3_aipc.backends.options import parse_flag
from phi3_aipc.engine import clear_engines, release_engine
from phi3_aipc.models import resolve
from phi3_aipc.testing.precision import LLM_F32

pytest.importorskip("openvino_genai")

COMMIT = "0123456789abcdef0123456789abcdef01234567"
FORCED = GenerationParams(max_new_tokens=3, ignore_eos=True)
PHI3_SPECIALS = {"<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"}


@pytest.fixture(autouse=True)
def _fresh_engines():
    clear_engines()
    yield
    clear_engines()


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline Hugging Face cache laid out as the Hub lays it (the Hub is unreachable here)."""
    import huggingface_hub.constants as hub_constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return cache


def _put_in_hub_cache(cache: Path, repo_id: str, source: Path) -> Path:
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    shutil.copytree(source, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


# -- one engine per resolved (artifact, device, backend, options) -------------------------------------------------
def test_every_device_spelling_shares_one_engine(tiny_phi3_ov: Path) -> None:
    engine = get_engine(str(tiny_phi3_ov), "auto")  # 'auto' is the CPU on this machine
    assert engine.device == "CPU"
    for model, device in (
        (str(tiny_phi3_ov), "cpu"),
        (str(tiny_phi3_ov), " CPU "),
        (f"{tiny_phi3_ov}/", None),
    ):
        assert get_engine(model, device) is engine
    assert get_engine(str(tiny_phi3_ov), "cpu", backend="ov") is engine
    assert (
        engine.context_window
        == json.loads((tiny_phi3_ov / "config.json").read_text())["max_position_embeddings"]
    )


def test_alias_and_repo_id_share_one_engine(hub_cache: Path, tiny_phi3_ov: Path) -> None:
    _put_in_hub_cache(hub_cache, "OpenVINO/Phi-3-mini-4k-instruct-int4-ov", tiny_phi3_ov)
    engine = get_engine("phi-3-mini", "cpu")
    assert get_engine("microsoft/Phi-3-mini-4k-instruct", "auto") is engine
    assert get_engine("PHI-3-MINI", " CPU ") is engine
    assert get_engine(None, "cpu") is engine  # the default model
    assert engine.model_name == "microsoft/Phi-3-mini-4k-instruct" and engine.model_family == "phi3"


def test_a_pinned_revision_resolves_to_that_snapshot(hub_cache: Path, tiny_phi3_ov: Path) -> None:
    snapshot = _put_in_hub_cache(hub_cache, "OpenVINO/Phi-3-mini-4k-instruct-int4-ov", tiny_phi3_ov)
    assert resolve("phi-3-mini", "CPU", "openvino", revision=COMMIT).path == snapshot
    pinned = get_engine("phi-3-mini", "cpu", options={"revision": COMMIT})
    assert get_engine("phi-3-mini", "cpu") is pinned, "the same snapshot is the same engine"
    with pytest.raises(ModelNotFoundError, match="at revision v9-missing.*--revision v9-missing"):
        get_engine("phi-3-mini", "cpu", options={"revision": "v9-missing"})
    with pytest.raises(InvalidParameterError, match="revision"):
        get_engine("phi-3-mini", "cpu", options={"revision": ""})


@pytest.mark.smollm2
def test_smollm2_alias_and_its_gguf_path_share_one_engine(smollm2_gguf: Path) -> None:
    engine = get_engine("smollm2", "cpu")
    assert get_engine(str(smollm2_gguf), "auto") is engine
    assert get_engine("SmolLM2", " cpu ") is engine
    assert engine.model_name == "smollm2" and engine.context_window == 8192
    assert {"<|im_start|>", "<|im_end|>", "<|endoftext|>"} <= engine.special_tokens


def test_different_options_are_different_engines_and_release_frees_one(tiny_phi3_ov: Path) -> None:
    default = get_engine(str(tiny_phi3_ov), "cpu")
    f32 = get_engine(str(tiny_phi3_ov), "cpu", options=LLM_F32)
    assert f32 is not default
    assert release_engine(f32) is True
    assert release_engine(f32) is False, "already released"
    assert get_engine(str(tiny_phi3_ov), "cpu") is default, "the other engine stays cached"
    fresh = get_engine(str(tiny_phi3_ov), "cpu", options=LLM_F32)
    assert fresh is not f32 and fresh.generate("Hello", FORCED).completion_tokens == 3


@pytest.mark.parametrize("backend", ["openvino", "openvino-batching"])
def test_spellings_of_one_option_share_one_engine(tiny_phi3_ov: Path, backend: str) -> None:
    """Issue 23 item 12: NUM_STREAMS 1, 1.0 and a lower-case key mean the same to OpenVINO: one load."""
    spellings = [{"NUM_STREAMS": 1}, {"NUM_STREAMS": 1.0}, {"num_streams": 1}, {"Num_Streams": 1.0}]
    engines = [get_engine(str(tiny_phi3_ov), "cpu", backend=backend, options=o) for o in spellings]
    assert all(engine is engines[0] for engine in engines)
    assert engines[0].generate("Hello", FORCED).completion_tokens == 3
    two = get_engine(str(tiny_phi3_ov), "cpu", backend=backend, options={"NUM_STREAMS": 2})
    assert two is not engines[0], "a different value is a different engine"


def test_one_option_spelt_twice_with_two_values_is_refused(tiny_phi3_ov: Path) -> None:
    with pytest.raises(InvalidParameterError, match="NUM_STREAMS is given twice"):
        get_engine(str(tiny_phi3_ov), "cpu", options={"NUM_STREAMS": 1, "num_streams": 2})


# -- what is refused before anything loads -----------------------------------------------------------------------
@pytest.mark.parametrize("model", ["", "   ", 42])
def test_an_empty_or_non_text_model_is_refused(model: object) -> None:
    with pytest.raises(InvalidParameterError, match="model must be a model name"):
        get_engine(model, "cpu")  # type: ignore[arg-type]


@pytest.mark.parametrize("options", [["MAX_PROMPT_LEN", 64], "NUM_STREAMS=1", 3])
def test_options_must_be_a_mapping(tiny_phi3_ov: Path, options: object) -> None:
    with pytest.raises(InvalidParameterError, match="options must be a mapping"):
        get_engine(str(tiny_phi3_ov), "cpu", options=options)  # type: ignore[arg-type]


def test_an_unknown_openvino_option_is_named(tiny_phi3_ov: Path) -> None:
    with pytest.raises(InvalidParameterError, match="does not know the option\\(s\\) FOO_BAR"):
        get_engine(str(tiny_phi3_ov), "cpu", options={"FOO_BAR": 1})


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (True, True),
        (False, False),
        ("true", True),
        ("TRUE", True),
        ("Yes", True),
        ("1", True),
        ("on", True),
        (1, True),
        ("false", False),
        ("False", False),
        ("no", False),
        ("0", False),
        (" OFF ", False),
        (0, False),
    ],
)
def test_flags_are_parsed_not_truthy(value: object, parsed: bool) -> None:
    assert parse_flag("trust_remote_code", value) is parsed


@pytest.mark.parametrize("value", ["maybe", "", "nope", 2, None, 1.0])
def test_other_flag_values_are_refused(value: object) -> None:
    with pytest.raises(InvalidParameterError, match="trust_remote_code must be true or false"):
        parse_flag("trust_remote_code", value)


@pytest.fixture
def remote_code_model(
    tiny_phi3_hf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path]:
    """The tiny checkpoint plus custom modelling code that leaves a marker file when it runs."""
    import transformers.dynamic_module_utils as dynamic

    folder = Path(shutil.copytree(tiny_phi3_hf, tmp_path / "remote"))
    marker = tmp_path / "remote-code-ran"
    (folder / "custom_phi3.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import Phi3ForCausalLM\n"
        "class CustomPhi3(Phi3ForCausalLM):\n    pass\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "custom_phi3.CustomPhi3"}
    (folder / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    return folder, marker


@pytest.mark.parametrize("spelling", ["no", "False", "0", "off", False])
def test_trust_remote_code_no_never_runs_the_folders_code(
    remote_code_model: tuple[Path, Path], spelling: object
) -> None:
    pytest.importorskip("torch")
    folder, marker = remote_code_model
    backend = load_backend("transformers", str(folder), "cpu", {"trust_remote_code": spelling})
    assert not marker.exists()
    assert type(backend._model).__name__ == "Phi3ForCausalLM"


def test_trust_remote_code_yes_runs_it_and_nonsense_is_refused(remote_code_model: tuple[Path, Path]) -> None:
    pytest.importorskip("torch")
    folder, marker = remote_code_model
    with pytest.raises(InvalidParameterError, match="trust_remote_code must be true or false"):
        load_backend("transformers", str(folder), "cpu", {"trust_remote_code": "maybe"})
    assert not marker.exists()
    backend = load_backend("transformers", str(folder), "cpu", {"trust_remote_code": "yes"})
    assert marker.exists(), "the switch is real: 'yes' does run the folder's code"
    assert type(backend._model).__name__ == "CustomPhi3"


# -- special tokens ----------------------------------------------------------------------------------------------
def test_special_tokens_of_the_tiny_phi3_on_openvino_and_transformers(
    tiny_phi3_ov: Path, tiny_phi3_hf: Path
) -> None:
    pytest.importorskip("torch")
    assert get_engine(str(tiny_phi3_ov), "cpu").special_tokens == PHI3_SPECIALS
    assert get_engine(str(tiny_phi3_hf), "cpu", backend="transformers").special_tokens == PHI3_SPECIALS
