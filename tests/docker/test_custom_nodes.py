"""docker/install_custom_nodes.py against local git repositories (no network), and
docker/node_catalogue.py: the image's /object_info (from a ComfyUI started for it) compared with
the committed snapshots, as the image build runs them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL = REPO_ROOT / "docker" / "install_custom_nodes.py"
CATALOGUE = REPO_ROOT / "docker" / "node_catalogue.py"
CONFIG = REPO_ROOT / "docker" / "custom_nodes.toml"
CORE_INFO = REPO_ROOT / "rp_devstack" / "comfyui_standin" / "object_info.json"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


def make_repo(root: Path, name: str, versions: list[dict[str, str]]) -> tuple[str, list[str]]:
    """A git repo with one commit per version (files written); its URL and the commit shas."""
    repo = root / "remotes" / name
    repo.mkdir(parents=True)
    git(repo, "init", "--quiet", "-b", "main")
    shas = []
    for files in versions:
        for rel, text in files.items():
            (repo / rel).write_text(text)
        git(repo, "add", "-A")
        git(repo, "commit", "--quiet", "-m", f"v{len(shas)}")
        shas.append(git(repo, "rev-parse", "HEAD"))
    return repo.as_uri(), shas


def run_install(tmp_path: Path, config: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "nodes.toml").write_text(textwrap.dedent(config))
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir(exist_ok=True)
    (comfy / "main.py").write_text("")
    recorder = tmp_path / "pip.py"
    recorder.write_text(
        "import sys, json\n"
        f"open({str(tmp_path / 'pip.log')!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    return subprocess.run(
        [sys.executable, str(INSTALL), "--config", str(tmp_path / "nodes.toml"),
         "--comfyui-dir", str(comfy), "--pip", f"{sys.executable} {recorder}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def pip_calls(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "pip.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_packages_install_in_order_at_their_pinned_commits(tmp_path: Path) -> None:
    first_url, first = make_repo(
        tmp_path, "first", [{"nodes.py": "v0", "requirements.txt": "a==1\n"}, {"nodes.py": "v1"}]
    )
    second_url, second = make_repo(tmp_path, "second", [{"nodes.py": "only"}])
    config = f"""
        [[package]]
        name = "First"
        repo = "{first_url}"
        commit = "{first[0]}"
        pip = ["extra==2.0"]

        [[package]]
        name = "Second"
        repo = "{second_url}"
        commit = "{second[0]}"
    """
    result = run_install(tmp_path, config)
    assert result.returncode == 0, result.stderr
    nodes = tmp_path / "ComfyUI" / "custom_nodes"
    # pinned to the older commit, not the branch tip
    assert (nodes / "First" / "nodes.py").read_text() == "v0"
    assert git(nodes / "First", "rev-parse", "HEAD") == first[0]
    assert git(nodes / "Second", "rev-parse", "HEAD") == second[0]
    calls = pip_calls(tmp_path)
    assert calls[0][:3] == ["install", "--no-cache-dir", "-r"]
    assert calls[0][3].endswith("First/requirements.txt")
    assert calls[1] == ["install", "--no-cache-dir", "extra==2.0"]
    assert len(calls) == 2  # Second has no requirements.txt and no extras
    lines = result.stdout.splitlines()
    assert lines.index(f"custom nodes: installed First @ {first[0][:12]}") < lines.index(
        f"custom nodes: installed Second @ {second[0][:12]}"
    )

    # A rebuild keeps a folder at its pin; a new pin checks the new commit out.
    again = run_install(tmp_path, config)
    assert f"already at First @ {first[0][:12]}" in again.stdout
    moved = run_install(tmp_path, config.replace(first[0], first[1]))
    assert moved.returncode == 0, moved.stderr
    assert (nodes / "First" / "nodes.py").read_text() == "v1"


def test_an_unknown_commit_fails_naming_the_package(tmp_path: Path) -> None:
    url, _ = make_repo(tmp_path, "pkg", [{"nodes.py": "x"}])
    result = run_install(
        tmp_path, f'[[package]]\nname = "Pkg"\nrepo = "{url}"\ncommit = "{"1" * 40}"\n'
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"custom nodes: Pkg @ {'1' * 12}")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('[[package]]\nname = "P"\nrepo = "x"\ncommit = "main"\n', "full 40-hex commit sha"),
        ('[[package]]\nname = "../P"\nrepo = "x"\ncommit = "' + "a" * 40 + '"\n', "'name'"),
        ('[[package]]\nname = "P"\ncommit = "' + "a" * 40 + '"\n', "'repo'"),
        (
            '[[package]]\nname = "P"\nrepo = "x"\ncommit = "' + "a" * 40 + '"\nbranch = "m"\n',
            "unknown",
        ),
        ("[[package]\n", "cannot read it"),
    ],
)
def test_a_bad_config_is_one_line_and_exit_2(tmp_path: Path, config: str, message: str) -> None:
    result = run_install(tmp_path, config)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_the_shipped_config_is_valid() -> None:
    sys.path.insert(0, str(INSTALL.parent))
    try:
        from install_custom_nodes import load_config
    finally:
        sys.path.pop(0)
    packages = load_config(CONFIG)
    assert len({p.name for p in packages}) == len(packages)


# ---------------------------------------------------------------- the node catalogue

PKG_NODE = {
    "input": {"required": {"model": ["MODEL"], "steps": ["INT", {"default": 4, "min": 1}]}},
    "input_order": {"required": ["model", "steps"]},
    "output": ["MODEL"], "output_is_list": [False], "output_name": ["MODEL"],
    "name": "PkgNode", "display_name": "Pkg Node", "description": "", "category": "pkg",
    "output_node": False, "python_module": "custom_nodes.Pkg",
}  # fmt: skip


def catalogue(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CATALOGUE), *args], capture_output=True, text=True, timeout=120
    )


def setup_catalogue(tmp_path: Path, image: dict) -> tuple[Path, Path, Path]:
    """A dump of `image`, the committed snapshots (core + Pkg, as `write` makes them), config."""
    config = tmp_path / "nodes.toml"
    config.write_text(f'[[package]]\nname = "Pkg"\nrepo = "x"\ncommit = "{"a" * 40}"\n')
    committed_dump = tmp_path / "committed.json"
    core = json.loads(CORE_INFO.read_text())
    committed_dump.write_text(json.dumps({**core, "PkgNode": PKG_NODE}))
    directory = tmp_path / "catalogue"
    result = catalogue("write", "--dump", str(committed_dump), "--catalogue-dir", str(directory),
                       "--config", str(config))  # fmt: skip
    assert result.returncode == 0, result.stderr
    dump = tmp_path / "image.json"
    dump.write_text(json.dumps(image))
    return dump, directory, config


def check(dump: Path, directory: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return catalogue("check", "--dump", str(dump), "--catalogue-dir", str(directory),
                     "--config", str(config))  # fmt: skip


def test_an_image_matching_the_snapshots_passes_whatever_model_files_it_lists(
    tmp_path: Path,
) -> None:
    image = json.loads(CORE_INFO.read_text())
    image["LoraLoaderModelOnly"]["input"]["required"]["lora_name"] = [["some.safetensors"]]
    image["PkgNode"] = PKG_NODE
    image["OtherNode"] = {**PKG_NODE, "name": "OtherNode", "python_module": "custom_nodes.Base.x"}
    dump, directory, config = setup_catalogue(tmp_path, image)
    assert sorted(p.name for p in directory.iterdir()) == ["Pkg.json", "core.json"]
    assert list(json.loads((directory / "Pkg.json").read_text())) == ["PkgNode"]
    result = check(dump, directory, config)
    assert result.returncode == 0, result.stderr
    assert "Base is installed but not in custom_nodes.toml" in result.stdout


def test_drift_fails_with_one_line_per_difference(tmp_path: Path) -> None:
    image = json.loads(CORE_INFO.read_text())
    image["KSampler"]["input"]["required"]["steps"][1]["max"] = 500  # another ComfyUI version
    del image["SaveVideo"]
    image["NewCoreNode"] = {**PKG_NODE, "name": "NewCoreNode", "python_module": "nodes"}
    image["PkgNode"] = {**PKG_NODE, "output": ["LATENT"]}
    dump, directory, config = setup_catalogue(tmp_path, image)
    result = check(dump, directory, config)
    assert result.returncode == 1
    drift = [line for line in result.stderr.splitlines() if "drift:" in line]
    assert drift == [
        "node catalogue drift: core: KSampler.input.required.steps.1.max: committed 10000, image 500",
        "node catalogue drift: core: node NewCoreNode is in the image, not in the snapshot",
        "node catalogue drift: core: node SaveVideo is in the snapshot, not in the image",
        'node catalogue drift: Pkg: PkgNode.output.0: committed "MODEL", image "LATENT"',
    ]
    assert "scripts/regen-node-catalogue.sh" in result.stderr


def test_a_listed_package_that_did_not_load_is_drift(tmp_path: Path) -> None:
    dump, directory, config = setup_catalogue(tmp_path, json.loads(CORE_INFO.read_text()))
    result = check(dump, directory, config)
    assert result.returncode == 1
    assert "Pkg: listed in custom_nodes.toml but no node of it loaded" in result.stderr


def test_dump_starts_comfyui_cpu_only_on_loopback_and_stops_it(tmp_path: Path) -> None:
    """A stand-in main.py that answers /object_info as ComfyUI does and records its argv."""
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    (comfy / "main.py").write_text(
        textwrap.dedent(f"""
        import json, sys
        from http.server import BaseHTTPRequestHandler, HTTPServer
        args = sys.argv[1:]
        open({str(tmp_path / "argv.json")!r}, "w").write(json.dumps(args))
        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps({{"PkgNode": {json.dumps(PKG_NODE)}}}).encode()
                self.send_response(200 if self.path == "/object_info" else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def log_message(self, *a):
                pass
        HTTPServer((args[args.index("--listen") + 1], int(args[args.index("--port") + 1])), H).serve_forever()
    """).replace("false", "False")
    )
    out = tmp_path / "object_info.json"
    result = catalogue("dump", "--comfyui-dir", str(comfy), "--out", str(out), "--timeout", "30")
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["PkgNode"]["python_module"] == "custom_nodes.Pkg"
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert "--cpu" in argv and argv[argv.index("--listen") + 1] == "127.0.0.1"


def test_dump_reports_a_comfyui_that_exits(tmp_path: Path) -> None:
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    (comfy / "main.py").write_text("import sys\nprint('ImportError: no torch')\nsys.exit(3)\n")
    result = catalogue("dump", "--comfyui-dir", str(comfy), "--out", str(tmp_path / "o.json"))
    assert result.returncode == 2
    assert "ComfyUI exited with status 3" in result.stderr and "no torch" in result.stderr
