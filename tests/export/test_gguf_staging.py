"""Staging folders a killed GGUF conversion leaves are cleaned by the next conversion; live ones never are
(issue 23 item 11). Real conversions of the packaged SmolLM2 GGUF into a fresh cache, real SIGKILLs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from phi3_aipc import GenerationParams, get_engine
from phi3_aipc.engine import clear_engines

pytestmark = [
    pytest.mark.smollm2,
    pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL"),
]
pytest.importorskip("openvino_genai")
pytest.importorskip("gguf")

CONVERT = "from phi3_aipc import get_engine; get_engine('smollm2', 'cpu')"
#: A live writer: a staging folder held by this child until the parent kills it.
HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from phi3_aipc.export.gguf_staging import staging_folder
    with staging_folder(Path(sys.argv[1]), ".someone-else.partial-") as folder:
        (folder / "openvino_model.bin").write_bytes(bytes(1 << 20))
        print(folder, flush=True)
        time.sleep(600)
    """
)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh phi3-aipc cache: the packaged GGUF is converted to an IR in it (about 10 s)."""
    monkeypatch.setenv("PHI3_AIPC_CACHE", str(tmp_path / "cache"))
    clear_engines()
    yield tmp_path / "cache"
    clear_engines()


def exports(cache: Path) -> Path:
    return cache / "exports" / "openvino"


def staging_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and ".partial-" in p.name)


def kill_a_conversion_midway(cache: Path) -> list[Path]:
    """Start a real conversion in a child, SIGKILL it once its staging folder has files: what it leaves."""
    child = subprocess.Popen([sys.executable, "-c", CONVERT], env=dict(os.environ), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and child.poll() is None:
            left = staging_in(exports(cache))
            if left and any(left[0].iterdir()):
                break
            time.sleep(0.05)
        assert child.poll() is None, "the conversion ended before it could be killed"
    finally:
        child.kill()
        child.wait()
    left = staging_in(exports(cache))
    assert left, "the killed conversion left nothing to clean (the premise of the test)"
    return left


def test_the_next_conversion_removes_what_a_killed_one_left(cache: Path) -> None:
    left = kill_a_conversion_midway(cache)
    engine = get_engine("smollm2", "cpu")
    assert engine.generate("Hi", GenerationParams(max_new_tokens=2, ignore_eos=True)).completion_tokens == 2
    assert not any(folder.exists() for folder in left), f"still there: {left}"
    assert staging_in(exports(cache)) == []


def test_a_staging_folder_a_live_process_writes_is_left_alone(cache: Path) -> None:
    exports(cache).mkdir(parents=True)
    writer = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(exports(cache))],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        live = Path(writer.stdout.readline().strip())
        assert live.is_dir()
        ownerless = exports(cache) / ".fresh-without-owner.partial-x"
        ownerless.mkdir()  # as a conversion's folder looks in the instant before it takes its lock
        old = exports(cache) / ".left-by-an-older-version.partial-y"
        (old / "sub").mkdir(parents=True)
        three_days_ago = time.time() - 3 * 24 * 3600
        for path in (old / "sub", old):
            os.utime(path, (three_days_ago, three_days_ago))
        get_engine("smollm2", "cpu")  # converts, cleaning first
        assert not old.exists(), "an ownerless folder untouched for days is a leftover"
        assert live.is_dir() and (live / "openvino_model.bin").is_file(), "a live writer's folder was removed"
        assert ownerless.is_dir(), "a fresh folder without an owner was removed"
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        clear_engines()
        from phi3_aipc.export.gguf_staging import clean_stale_staging

        assert clean_stale_staging(exports(cache)) == [live], "once its writer died, it is stale"
    finally:
        writer.kill()
        writer.wait()
