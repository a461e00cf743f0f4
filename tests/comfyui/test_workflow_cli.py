"""`rp-launch workflow check|list`: the pre-pod check as one command, needing no RunPod key; and
the node catalogue folder it reads (every snapshot merged, a bad one named in one line)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rp_pipeline.tools.launch import main

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "workflows" / "catalogue"
VHS_SNAPSHOT = (
    ROOT / "tests" / "pipeline" / "workflows" / "catalogue" / "ComfyUI-VideoHelperSuite.json"
)
VHS = ROOT / "tests" / "pipeline" / "workflows" / "wan22_5b_vhs"


@pytest.fixture(autouse=True)
def _no_runpod_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)


def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, snapshots: list[Path]) -> Path:
    """A workflows folder with the VHS workflow, and a catalogue of `snapshots`."""
    (tmp_path / "catalogue").mkdir()
    for snapshot in snapshots:
        shutil.copy(snapshot, tmp_path / "catalogue" / snapshot.name)
    for suffix in (".json", ".params.yaml"):
        shutil.copy(VHS.with_name(VHS.name + suffix), tmp_path / f"vhs{suffix}")
    monkeypatch.setenv("RP_WORKFLOWS_DIR", str(tmp_path))
    return tmp_path


def test_check_prints_ok_and_the_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workflow", "check", "wan22_t2v_14b"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "OK wan22_t2v_14b: WAN 2.2 text-to-video 14B (high+low noise experts), 720p "
        "(GPU memory: 48 GB)"
    )
    assert "  prompt (text, required) -> 89.text" in out
    assert "  steps (int, default 20) -> 81.steps, 78.steps, 78.end_at_step" in out
    assert "  seed (int, random when not given) -> 81.noise_seed" in out


def test_check_json_and_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workflow", "check", "wan22_ti2v_5b", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["ok"] and found["gpu_memory_gb"] == 24
    assert found["parameters"]["width"] == {
        "type": "int", "required": False, "default": 1280, "to": ["55.width"],
    }  # fmt: skip
    assert main(["workflow", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("wan22_i2v_14b_lightx2v", "wan22_t2v_14b", "wan22_ti2v_5b"):
        assert f"\n  {name}: WAN 2.2" in out


def test_a_custom_node_needs_its_package_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder(tmp_path, monkeypatch, [CATALOGUE / "core.json"])
    assert main(["workflow", "check", "vhs"]) == 2
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith("vhs: node 58: class 'VHS_VideoCombine' is not in the node catalogue")
    assert main(["workflow", "list"]) == 0
    assert "vhs: REFUSED, 1 problem(s): `rp-launch workflow check vhs`" in capsys.readouterr().out

    shutil.copy(VHS_SNAPSHOT, tmp_path / "catalogue")
    assert main(["workflow", "check", "vhs"]) == 0
    assert capsys.readouterr().out.startswith("OK vhs: ")


def test_check_a_path_with_several_problems_one_line_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = folder(tmp_path, monkeypatch, [CATALOGUE / "core.json", VHS_SNAPSHOT])
    api = json.loads((directory / "vhs.json").read_text())
    api["58"]["inputs"]["loop_count"] = 500
    api["58"]["inputs"]["format"] = "video/mkv"
    api["3"]["inputs"]["positive"] = ["6", 1]
    api["39"]["inputs"]["vae_name"] = "my_vae.safetensors"
    path = tmp_path / "elsewhere" / "vhs.json"
    path.parent.mkdir()
    path.write_text(json.dumps(api))
    shutil.copy(directory / "vhs.params.yaml", path.parent)
    assert main(["workflow", "check", str(path)]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ", 1)[1].split(":")[0] for line in lines] == [
        "node 3 (KSampler) input 'positive'",
        "node 39 (VAELoader) input 'vae_name'",
        "node 58 (VHS_VideoCombine) input 'loop_count'",
        "node 58 (VHS_VideoCombine) input 'format'",
    ]
    assert "linked to output 1 of node 6 (CLIPTextEncode), which has 1 output(s)" in lines[0]
    assert "model file 'my_vae.safetensors' is neither in the image's model manifest" in lines[1]
    assert "'video/mkv' is not one of its choices (image/gif, image/webp" in lines[3]


def test_a_bad_catalogue_snapshot_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = folder(tmp_path, monkeypatch, [CATALOGUE / "core.json"])
    (directory / "catalogue" / "broken.json").write_text('{"X": {"output": []}}')
    assert main(["workflow", "check", "wan22_t2v_14b"]) == 2
    assert capsys.readouterr().out.splitlines() == [
        "wan22_t2v_14b: unknown workflow 'wan22_t2v_14b'; known: vhs"
    ]
    assert main(["workflow", "check", "vhs"]) == 2
    [line] = capsys.readouterr().out.splitlines()
    assert line == (
        f"vhs: node catalogue {directory / 'catalogue' / 'broken.json'}: node 'X' has no "
        "'input' table; save the whole GET /object_info answer of a running ComfyUI"
    )


def test_a_folder_without_a_catalogue_uses_the_projects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = folder(tmp_path, monkeypatch, [])
    (directory / "catalogue").rmdir()
    monkeypatch.delenv("RP_NODE_CATALOGUE_DIR", raising=False)
    for path in (ROOT / "workflows").glob("wan22_ti2v_5b.*"):
        shutil.copy(path, directory / path.name)
    assert main(["workflow", "check", "wan22_ti2v_5b"]) == 0  # core nodes: the project's
    assert capsys.readouterr().out.startswith("OK wan22_ti2v_5b: ")
    assert main(["workflow", "check", "vhs"]) == 2  # the project's image installs no VHS
    assert "class 'VHS_VideoCombine' is not in the node catalogue" in capsys.readouterr().out
    monkeypatch.setenv("RP_WORKFLOWS_DIR", str(tmp_path / "nowhere"))
    assert main(["workflow", "check", "vhs"]) == 2
    assert f"known: none (no *.json in {tmp_path / 'nowhere'})" in capsys.readouterr().out


def test_output_cut_short_by_the_reader_is_no_error() -> None:
    """`rp-launch workflow check NAME | head -1`: the reader closes the pipe early; the tool
    ends quietly with 0 instead of a BrokenPipeError traceback."""
    import subprocess
    import sys

    tool = Path(sys.executable).with_name("rp-launch")
    script = f'"{tool}" workflow check wan22_t2v_14b | head -1; echo "rc=${{PIPESTATUS[0]}}"'
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    first, status = result.stdout.splitlines()
    assert first.startswith("OK wan22_t2v_14b")
    assert status == "rc=0"
    assert "Traceback" not in result.stderr
