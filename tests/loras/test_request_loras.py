"""`loras` on a video request: parsed and checked with the request, part of its key only when
present, applied to the planned graph, and passed to the batch's pods as RP_LORAS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rp_pipeline.fleet.run import lora_env_of
from rp_pipeline.fleet.state import BatchState, plan_videos
from rp_pipeline.video_requests.model import (
    RequestError,
    VideoRequest,
    parse_request,
    read_request_file,
)

HF = "https://huggingface.co/o/r/resolve/abc123/hi.safetensors"


def test_a_request_without_loras_keeps_its_key_and_dict() -> None:
    plain = {"prompt": "a fox", "seed": 1}
    request = VideoRequest.from_dict(plain)
    assert "loras" not in request.to_dict()
    assert request.key == VideoRequest.from_dict({**plain, "loras": []}).key
    with_lora = VideoRequest.from_dict({**plain, "loras": [{"file": "s.safetensors"}]})
    assert with_lora.key != request.key
    assert VideoRequest.from_dict(with_lora.to_dict()) == with_lora
    stronger = VideoRequest.from_dict(
        {**plain, "loras": [{"file": "s.safetensors", "strength": 0.5}]}
    )
    assert stronger.key != with_lora.key


def test_bad_loras_are_one_line_per_entry_in_a_prompts_file(tmp_path: Path) -> None:
    entries = [
        {"prompt": "ok", "loras": [{"url": HF, "strength": 0.6}]},
        {"prompt": "bad", "loras": [{"url": "http://x/a.safetensors"}, {"file": "b.txt"}]},
        {"prompt": "no such expert", "workflow": "wan22_ti2v_5b",
         "loras": [{"file": "a.safetensors", "expert": "low"}]},
    ]  # fmt: skip
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"requests": entries}))
    requests, problems = read_request_file(path)
    assert [r.prompt for r in requests] == ["ok"]
    assert len(problems) == 2
    assert problems[0].startswith(f"{path}: entry 1: loras[0]: 'url' must be an https URL")
    assert "loras[1]:" in problems[0] and "\n" not in problems[0]
    assert "expert this workflow does not have" in problems[1]
    with pytest.raises(RequestError, match="must be a list"):
        parse_request({"prompt": "x", "loras": "a.safetensors"})


def test_planned_graph_carries_the_loras_and_the_batch_env_lists_each_once() -> None:
    one = parse_request({"prompt": "one", "workflow": "wan22_t2v_14b",
                         "loras": [{"url": HF, "strength": 0.6, "expert": "high"}]})  # fmt: skip
    two = parse_request({"prompt": "two", "workflow": "wan22_t2v_14b",
                         "loras": [{"url": HF}, {"r2": "loras/x.safetensors"}]})  # fmt: skip
    plain = parse_request({"prompt": "three", "workflow": "wan22_t2v_14b"})
    specs = {r.key: r for r in (one, two, plain)}
    planned, problems = plan_videos(specs, list(specs), "run-1")
    assert problems == {}
    loras = {
        p.partition_key: sorted(
            (n["inputs"]["lora_name"], n["inputs"]["strength_model"])
            for n in p.api_json.values() if n["class_type"] == "LoraLoaderModelOnly"
        )
        for p in planned
    }  # fmt: skip
    assert loras[one.key] == [("hi.safetensors", 0.6)]  # the high-noise path only
    assert loras[two.key] == [("hi.safetensors", 1.0)] * 2 + [("x.safetensors", 1.0)] * 2
    assert loras[plain.key] == []
    state = BatchState(run_id="run-1", videos=planned)
    wire = json.loads(lora_env_of(state))
    assert [w["name"] for w in wire] == ["hi.safetensors", "x.safetensors"]
    assert (
        lora_env_of(
            BatchState(run_id="run-1", videos=[p for p in planned if p.partition_key == plain.key])
        )
        == ""
    )


def test_sizing_counts_only_idle_pods_holding_the_runs_loras(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sizing: every idle pod's $/h is room (the launcher may end it), but only those holding
    the run's LoRAs count as pods it adopts."""
    import rp_pipeline.fleet.launcher as launcher

    class Usage:
        idle = 2
        idle_cost_per_hr = 1.5

    class Fleet:  # two idle pods that fit the image, GPU and volume
        def usage(self) -> Usage:
            return Usage()

        def adoptable(self, *, loras: tuple[str, ...] = (), **_: object) -> list[object]:
            return [] if loras else [object(), object()]  # neither holds a LoRA

    class Provider:
        image, gpu_types, network_volume_id = "img", ["g"], None

    monkeypatch.setattr(launcher.LiveFleet, "read", staticmethod(lambda client, r2: Fleet()))
    assert launcher.idle_room(None, None, Provider()) == launcher.IdleRoom(1.5, 2)
    assert launcher.idle_room(None, None, Provider(), loras=("a",)) == launcher.IdleRoom(1.5, 0)
