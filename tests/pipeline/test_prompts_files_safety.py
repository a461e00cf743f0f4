"""A prompts file anyone may edit cannot stall or exhaust the process that reads it: aliases
that expand too far are refused in one line (a modest alias still works), sizes are capped with the limit in the error, a bad value is quoted
short, and the good files beside a bad one still register."""

from __future__ import annotations

import time
from pathlib import Path

from rp_pipeline.video_requests.model import MAX_PROMPT_CHARS, scan_requests
from rp_pipeline.video_requests.safe_yaml import MAX_FILE_BYTES


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = ['a0: &a0 ["lol"]']
    for level in range(1, levels):
        items = ", ".join([f"*a{level - 1}"] * width)
        lines.append(f"a{level}: &a{level} [{items}]")
    lines.append(f"requests:\n  - prompt: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_in_one_line_and_the_good_file_registers(tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(alias_bomb())
    assert len(alias_bomb()) < 1000
    (tmp_path / "good.yaml").write_text("requests:\n  - prompt: a red fox in the snow\n")
    (tmp_path / "shared.yaml").write_text(
        "base: &base {width: 640}\nrequests:\n  - {prompt: with an alias, params: *base}\n"
    )
    started = time.monotonic()
    scan = scan_requests(tmp_path)
    assert time.monotonic() - started < 5
    assert sorted(r.prompt for r in scan.requests.values()) == [
        "a red fox in the snow",
        "with an alias",
    ]
    [problem] = scan.problems
    assert "bomb.yaml" in problem and "aliases expand to" in problem and "\n" not in problem
    assert len(problem) < 400


def test_a_file_over_the_size_cap_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "huge.yaml").write_text("# " + "x" * MAX_FILE_BYTES + "\n")
    [problem] = scan_requests(tmp_path).problems
    assert f"{MAX_FILE_BYTES} byte limit" in problem


def test_a_prompt_over_the_cap_names_the_limit(tmp_path: Path) -> None:
    long_prompt = "fox " * MAX_PROMPT_CHARS
    (tmp_path / "long.yaml").write_text(f"requests:\n  - prompt: {long_prompt}\n  - prompt: ok\n")
    scan = scan_requests(tmp_path)
    assert [r.prompt for r in scan.requests.values()] == ["ok"]
    [problem] = scan.problems
    assert f"limit of {MAX_PROMPT_CHARS}" in problem and len(problem) < 300


def test_a_bad_value_is_quoted_short(tmp_path: Path) -> None:
    big = ", ".join(["1"] * 5000)
    (tmp_path / "bad.yaml").write_text(f"requests:\n  - prompt: hi\n    seed: [{big}]\n")
    [problem] = scan_requests(tmp_path).problems
    assert "'seed' must be a whole number" in problem and len(problem) < 300
