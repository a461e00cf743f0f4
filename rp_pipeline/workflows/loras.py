"""LoRAs a request asks for: checked references, and the graph change that applies them.

A request lists LoRAs by reference (one of `file`, `url`, `r2`), with a strength and an
optional sha256:

    loras:
      - {file: "style.safetensors", strength: 0.8}                       # already on the volume
      - {url: "https://huggingface.co/o/r/resolve/<rev>/x.safetensors"}   # Hugging Face
      - {url: "https://civitai.com/api/download/models/12345", sha256: ...}
      - {r2: "loras/x.safetensors"}                                       # the run's bucket

The pod fetches every reference into `models/loras/` before ComfyUI starts (rp_agent.models,
env RP_LORAS as written by `pod_env_value`), sha256-verified; `attach_loras` then inserts one
`LoraLoaderModelOnly` per LoRA into the workflow, by the file name the pod saved it under.

Which model a LoRA patches: every diffusion-model path that feeds a sampler. WAN 2.2 14B has
two experts (high noise: the first sampler, low noise: the second), and a LoRA applies to both
unless its `expert` says `high` or `low` (LoRAs trained for WAN 2.2 often come as a high/low
pair: list both files, each with its expert). The new nodes go right after the loader (and any
LoRA the workflow already applies, e.g. lightx2v), before ModelSamplingSD3 and the sampler, as
the official templates chain them.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from rp_pipeline.workflows.spec import WorkflowError

LORA_NODE = "LoraLoaderModelOnly"
# The pod env variable rp_agent.models reads the run's LoRAs from.
LORAS_ENV = "RP_LORAS"
# Nodes that produce a diffusion model from a file (where a model path starts).
MODEL_LOADERS = {"UNETLoader", "CheckpointLoaderSimple", "UnetLoaderGGUF"}
# Nodes that already apply a LoRA to the loaded model: ours go after them.
LORA_NODES = {"LoraLoaderModelOnly", "LoraLoader"}
SAMPLERS = {"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"}
# LoraLoaderModelOnly.strength_model's range in ComfyUI's /object_info.
STRENGTH_MIN, STRENGTH_MAX = -100.0, 100.0
EXPERTS = ("both", "high", "low")
LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin", ".pth")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]{0,150}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CIVITAI_RE = re.compile(r"^/api/download/models/(\d+)/?$")
_KEYS = {"file", "url", "r2", "strength", "sha256", "expert"}
_SECRET_PARAMS = {"token", "key", "api_key", "apikey", "access_token", "auth", "signature", "sig"}


class LoraError(ValueError):
    """Bad LoRA references: one line per bad entry, joined by '; ' in the message."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class LoraRef:
    """One checked reference. `name` is the file name under models/loras/ on the pod."""

    name: str
    source: str  # "file", "hf", "civitai", "url" or "r2"
    location: str  # the file name, URL or R2 key as given
    strength: float = 1.0
    sha256: str | None = None
    expert: str = "both"

    def to_dict(self) -> dict[str, Any]:
        """The request form (what `parse_loras` reads back)."""
        key = "r2" if self.source == "r2" else "file" if self.source == "file" else "url"
        data: dict[str, Any] = {key: self.location, "strength": self.strength}
        if self.sha256:
            data["sha256"] = self.sha256
        if self.expert != "both":
            data["expert"] = self.expert
        return data

    def wire(self) -> dict[str, Any]:
        """What the pod's fetcher needs (RP_LORAS): where from, the name to save as, digest."""
        data: dict[str, Any] = {"name": self.name, "source": self.source}
        if self.source != "file":
            data["location"] = self.location
        if self.sha256:
            data["sha256"] = self.sha256
        return data


def _on_host(host: str, domain: str) -> bool:
    return host == domain or host.endswith("." + domain)


def _name_from_url(url: str) -> tuple[str, str, str | None]:
    """(source kind, file name, problem) for a LoRA URL."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.netloc:
        return "url", "", f"'url' must be an https URL, got {url!r}"
    # The URL lands in the pod's env and the video's metadata: no credentials in it.
    secret_params = {k.lower() for k, _ in parse_qsl(parts.query)} & _SECRET_PARAMS
    if parts.username or parts.password or secret_params:
        return (
            "url",
            "",
            (
                "'url' must not carry credentials (they would reach the pod env and the metadata): "
                "set CIVITAI_API_KEY / HF_TOKEN as RunPod secrets instead"
            ),
        )
    host = parts.hostname or ""
    if _on_host(host, "civitai.com"):
        match = _CIVITAI_RE.match(parts.path)
        if not match:
            return (
                "civitai",
                "",
                (
                    "a CivitAI 'url' must be https://civitai.com/api/download/models/<version id>, "
                    f"got {url!r}"
                ),
            )
        return "civitai", f"civitai_{match.group(1)}.safetensors", None
    name = PurePosixPath(parts.path).name
    if _on_host(host, "huggingface.co"):
        if "/resolve/" not in parts.path:
            return (
                "hf",
                "",
                (
                    "a Hugging Face 'url' must be a /resolve/<revision>/<file> link (the download "
                    f"link, not the page), got {url!r}"
                ),
            )
        return "hf", name, None
    return "url", name, None


def _check_name(name: str, what: str) -> str | None:
    if not _NAME_RE.match(name) or not name.lower().endswith(LORA_SUFFIXES):
        return (
            f"{what} must end in a plain LoRA file name (letters, digits, _.+-; "
            f"{'/'.join(LORA_SUFFIXES)}), got {name!r}"
        )
    return None


def parse_lora(entry: Any) -> LoraRef:
    """One reference, or LoraError with the one line that says what is wrong."""
    if not isinstance(entry, Mapping):
        raise LoraError([f"must be a mapping like {{file: x.safetensors, strength: 0.8}}, got "
                         f"{type(entry).__name__}"])  # fmt: skip
    unknown = sorted(set(map(str, entry)) - _KEYS)
    if unknown:
        raise LoraError(
            [f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_KEYS))})"]
        )
    given = [k for k in ("file", "url", "r2") if entry.get(k) is not None]
    if len(given) != 1:
        raise LoraError([f"needs exactly one of file, url, r2 (got {', '.join(given) or 'none'})"])
    kind = given[0]
    location = entry[kind]
    if not isinstance(location, str) or not location.strip():
        raise LoraError([f"'{kind}' must be non-empty text, got {location!r}"])
    location = location.strip()
    if kind == "url":
        source, name, problem = _name_from_url(location)
    elif kind == "r2":
        source, name, problem = "r2", PurePosixPath(location).name, None
        if location.startswith("/") or ".." in location.split("/"):
            problem = f"'r2' must be a key inside the bucket, got {location!r}"
    else:
        source, name, problem = "file", location, None
    problem = problem or _check_name(name, f"'{kind}'")
    strength = entry.get("strength", 1.0)
    if problem is None and (
        isinstance(strength, bool)
        or not isinstance(strength, int | float)
        or not STRENGTH_MIN <= strength <= STRENGTH_MAX
    ):
        problem = f"'strength' must be a number from {STRENGTH_MIN:g} to {STRENGTH_MAX:g}, got {strength!r}"
    sha = entry.get("sha256")
    if problem is None and sha is not None:
        sha = str(sha).lower()
        if not _SHA256_RE.match(sha):
            problem = f"'sha256' must be 64 hex digits, got {entry.get('sha256')!r}"
    expert = entry.get("expert", "both")
    if problem is None and expert not in EXPERTS:
        problem = f"'expert' must be one of {', '.join(EXPERTS)}, got {expert!r}"
    if problem:
        raise LoraError([problem])
    return LoraRef(name, source, location, float(strength), sha, str(expert))


def parse_loras(value: Any) -> tuple[LoraRef, ...]:
    """Every reference of a request's `loras`, or LoraError with one line per bad entry
    (`loras[<i>]: <what is wrong>`)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise LoraError([f"'loras' must be a list of references, got {type(value).__name__}"])
    refs: list[LoraRef] = []
    problems: list[str] = []
    by_name: dict[str, LoraRef] = {}
    for index, entry in enumerate(value):
        try:
            ref = parse_lora(entry)
        except LoraError as exc:
            problems += [f"loras[{index}]: {p}" for p in exc.problems]
            continue
        refs.append(ref)
        other = by_name.setdefault(ref.name, ref)
        if (other.source, other.location) != (ref.source, ref.location):
            problems.append(
                f"loras[{index}]: two different references save as {ref.name!r}; rename one"
            )
    if problems:
        raise LoraError(problems)
    return tuple(refs)


def pod_env_value(refs: Sequence[LoraRef]) -> str:
    """RP_LORAS for a pod: every distinct LoRA of the batch, as JSON (no secrets in it)."""
    seen: dict[str, dict[str, Any]] = {}
    for ref in refs:
        seen.setdefault(ref.name, ref.wire())
    return json.dumps(list(seen.values()), sort_keys=True, separators=(",", ":"))


def lora_ids(env_value: str) -> tuple[str, ...]:
    """The LoRAs a pod fetched at boot, from its RP_LORAS value: one canonical text per file
    (name, source, location, digest), sorted. An idle pod records them in its lease's needs,
    and a run adopts it only when the pod holds every LoRA the run asks for."""
    if not env_value:
        return ()
    items = json.loads(env_value)
    return tuple(sorted(json.dumps(item, sort_keys=True, separators=(",", ":")) for item in items))


# ---------------------------------------------------------------- the graph change


def _link(value: Any) -> str | None:
    return str(value[0]) if isinstance(value, list) and len(value) == 2 else None


def _expert_of_samplers(api: Mapping[str, Any], samplers: list[str]) -> dict[str, str]:
    """high / low for each sampler of a two-expert graph: the low-noise sampler continues the
    latent of the other one. A single-sampler graph has one expert, called "both"."""
    if len(samplers) < 2:
        return {s: "both" for s in samplers}
    experts = {}
    for sampler in samplers:
        source = _link(api[sampler]["inputs"].get("latent_image"))
        experts[sampler] = "low" if source in samplers else "high"
    return experts


def _insertion_point(api: Mapping[str, Any], sampler: str) -> tuple[str, str] | None:
    """(node id, input name) whose `model` link the new LoRAs go in front of: walking up the
    sampler's model path, the first node whose model comes from a loader or existing LoRA."""
    node, seen = sampler, set()
    while node not in seen:
        seen.add(node)
        upstream = _link(api[node]["inputs"].get("model"))
        if upstream is None or upstream not in api:
            return None
        if api[upstream]["class_type"] in MODEL_LOADERS | LORA_NODES:
            return node, "model"
        node = upstream
    return None


def attach_loras(api_json: Mapping[str, Any], loras: Sequence[LoraRef]) -> dict[str, Any]:
    """A copy of the API JSON with a chain of LoraLoaderModelOnly nodes (in the order given) on
    each model path that feeds a sampler. WorkflowError when a LoRA cannot be placed."""
    api = copy.deepcopy(dict(api_json))
    if not loras:
        return api
    samplers = sorted(k for k, v in api.items() if v.get("class_type") in SAMPLERS)
    experts = _expert_of_samplers(api, samplers)
    numeric = [int(k) for k in api if str(k).isdigit()]
    next_id = max(numeric, default=0) + 1
    patched: set[tuple[str, str]] = set()
    placed: set[str] = set()
    for sampler in samplers:
        point = _insertion_point(api, sampler)
        if point is None:
            raise WorkflowError(
                "loras", [f"sampler node {sampler} has no diffusion-model loader to patch"]
            )
        if point in patched:  # two samplers sharing one model path get the chain once
            continue
        patched.add(point)
        node, name = point
        upstream = api[node]["inputs"][name]
        for ref in loras:
            if ref.expert not in ("both", experts[sampler]):
                continue
            new = str(next_id)
            next_id += 1
            api[new] = {
                "inputs": {
                    "model": upstream,
                    "lora_name": ref.name,
                    "strength_model": ref.strength,
                },
                "class_type": LORA_NODE,
                "_meta": {"title": f"LoRA {ref.name} ({experts[sampler]})"},
            }
            upstream = [new, 0]
            placed.add(ref.name)
        api[node]["inputs"][name] = upstream
    unplaced = [ref.name for ref in loras if ref.name not in placed]
    if unplaced:
        raise WorkflowError(
            "loras",
            [
                f"LoRA(s) {', '.join(unplaced)} name an expert this workflow does not have "
                f"(its experts: {', '.join(sorted(set(experts.values())))})"
            ],
        )
    return api


def batch_loras(requests: Iterable[Mapping[str, Any]]) -> tuple[LoraRef, ...]:
    """Every LoRA of a batch of requests (their `to_dict` form), for the batch's pods."""
    refs: list[LoraRef] = []
    for request in requests:
        refs += parse_loras(request.get("loras"))
    return tuple(refs)
