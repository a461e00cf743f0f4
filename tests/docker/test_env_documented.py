"""Every environment variable the code reads is in the env table of
docs/runpod-template-config.md, and every name in that table is read somewhere.

"Read" is found by pattern, in rp_agent, rp_pipeline, rp_devstack and docker/*.sh:
`os.environ["X"]` (not an assignment), `os.environ.get("X")`, `os.getenv("X")`, `env.get("X")`,
`env["X"]`, any `...env...("X")` call (`EnvVar("X")`, helpers like `_optional_env("X")`),
constants named `*ENV*` holding names (`STATE_DIR_ENV = "X"`, `R2_ENV_NAMES = (...)`), and
`${X:-...}`-style expansions in the shell scripts. A failure lists exactly which names are
missing from the docs or documented but never read, with where each is read.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_DOC = REPO_ROOT / "docs" / "runpod-template-config.md"
PACKAGES = ("rp_agent", "rp_pipeline", "rp_devstack")
TABLE_START = "<!-- env-table:start -->"
TABLE_END = "<!-- env-table:end -->"

# Names read but deliberately not in the user-facing table, each with its reason.
NOT_DOCUMENTED = {
    "HOME": "standard POSIX variable (start.sh puts the SSH key under it)",
    "PATH": "standard POSIX variable",
    "TMPDIR": "standard POSIX variable",
    "LANG": "host locale, passed through to devstack local pods",
    "LC_ALL": "host locale, passed through to devstack local pods",
    "TZ": "host time zone, passed through to devstack local pods",
    "VIRTUAL_ENV": "host venv, passed through to devstack local pods",
    "PYTHONPATH": "host import path, passed through to devstack local pods",
    "XDG_STATE_HOME": "XDG standard; only picks rp-agent's default state dir off the pod",
    "COMFY_STANDIN_FAULT": "test-only fault injection knob of the devstack ComfyUI stand-in",
}

NAME = r"([A-Z][A-Z0-9_]*[A-Z0-9])"
PY_READS = [
    re.compile(rf'os\.environ\[\s*"{NAME}"\s*\](?!\s*=[^=])'),
    re.compile(rf'environ\.get\(\s*"{NAME}"'),
    re.compile(rf'os\.getenv\(\s*"{NAME}"'),
    re.compile(rf'\benv\.get\(\s*"{NAME}"'),
    re.compile(rf'\benv\[\s*"{NAME}"\s*\](?!\s*=[^=])'),
    re.compile(rf'\b\w*[Ee]nv\w*\(\s*"{NAME}"'),
]
PY_ENV_CONSTANT = re.compile(r"^\s*[A-Z_]*ENV[A-Z_]*\s*(?::[^=]+)?=\s*(.+)$")
SH_READ = re.compile(rf"\$\{{{NAME}(?::?[-+=?])")
QUOTED_NAME = re.compile(rf'"{NAME}"')


def python_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO_ROOT / package).rglob("*.py"))


def shell_files() -> list[Path]:
    return sorted((REPO_ROOT / "docker").glob("*.sh"))


def env_reads() -> dict[str, list[str]]:
    """Name -> ["path:line", ...] for every recognised read."""
    reads: dict[str, list[str]] = defaultdict(list)
    for path in python_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.relative_to(REPO_ROOT)}:{number}"
            names = {m for pattern in PY_READS for m in pattern.findall(line)}
            constant = PY_ENV_CONSTANT.match(line)
            if constant:
                names |= set(QUOTED_NAME.findall(constant.group(1)))
            for name in names:
                reads[name].append(where)
    for path in shell_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for name in SH_READ.findall(line):
                reads[name].append(f"{path.relative_to(REPO_ROOT)}:{number}")
    return reads


def documented_names() -> set[str]:
    text = ENV_DOC.read_text()
    assert TABLE_START in text and TABLE_END in text, f"{ENV_DOC} lost its env table markers"
    table = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0]
    return set(re.findall(rf"^\|\s*`{NAME}`", table, flags=re.MULTILINE))


def mentioned_anywhere(name: str) -> bool:
    """Looser than env_reads: any quoted use in Python or any expansion in the scripts."""
    pattern_py = f'"{name}"'
    pattern_sh = re.compile(rf"\${{?{name}\b")
    return any(pattern_py in p.read_text() for p in python_files()) or any(
        pattern_sh.search(p.read_text()) for p in shell_files()
    )


def test_every_env_var_read_is_documented() -> None:
    reads = env_reads()
    documented = documented_names()
    undocumented = sorted(set(reads) - documented - set(NOT_DOCUMENTED))
    assert not undocumented, (
        f"{len(undocumented)} env var(s) read but not in the env table of "
        f"{ENV_DOC.relative_to(REPO_ROOT)}:\n"
        + "\n".join(f"  {name}  (read at {', '.join(reads[name][:3])})" for name in undocumented)
    )


def test_every_documented_env_var_is_read() -> None:
    unread = sorted(name for name in documented_names() if not mentioned_anywhere(name))
    assert not unread, (
        f"{len(unread)} env var(s) documented in {ENV_DOC.relative_to(REPO_ROOT)} but read "
        "nowhere in rp_agent, rp_pipeline, rp_devstack or docker/*.sh:\n  " + "\n  ".join(unread)
    )


def test_allowlist_has_no_stale_entries() -> None:
    reads = env_reads()
    stale = sorted(name for name in NOT_DOCUMENTED if name not in reads)
    assert not stale, f"NOT_DOCUMENTED lists names no longer read: {stale}"


def test_the_scan_finds_reads_of_every_kind() -> None:
    """Guards the patterns themselves: one known read of each kind must be found."""
    reads = env_reads()
    for name in ("RUNPOD_API_KEY", "R2_SECRET_ACCESS_KEY", "RP_AGENT_STATE_DIR", "GPU_TIER"):
        assert name in reads, name
    assert any(w.startswith("docker/download_models.sh") for w in reads["RP_MODELS_PYTHON"])
