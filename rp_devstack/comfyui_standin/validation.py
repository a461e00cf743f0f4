"""Prompt validation, ported from ComfyUI's `execution.validate_prompt` / `validate_inputs`.

The structure deliberately follows the real code (including where exceptions escape) so the
error types, messages and the per-node `node_errors` table come out as the real server's do:
a bad link raises inside validation and surfaces as `exception_during_validation`, exactly as
recorded in `invalid_link_wrong_output_index.json`.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from rp_devstack.comfyui_standin.catalogue import combo_options

Error = dict[str, Any]
Validated = dict[str, tuple[bool, list[Error], str]]

# Node-specific VALIDATE_INPUTS hooks: (class_type) -> {input name: checker(value) -> True | msg}.
CustomCheck = Callable[[Any], "bool | str"]

# Combo inputs the real server (0.3.64) does not check at validation: measured, SaveVideo with
# format "webm" is accepted (HTTP 200) and fails when the node runs ("'webm' is not a valid
# VideoContainer"). The stand-in's executor makes the same run-time check.
CHECKED_AT_RUN_TIME = {("SaveVideo", "format"), ("SaveVideo", "codec")}


def _input_info(class_inputs: dict[str, Any], name: str) -> tuple[Any, str, dict[str, Any]]:
    for category in ("required", "optional"):
        spec = class_inputs.get(category, {}).get(name)
        if spec is not None:
            extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            return spec[0], category, extra
    raise KeyError(name)


def _types_match(received: str, wanted: Any) -> bool:
    if not isinstance(wanted, str):
        return received == "COMBO"
    if received == wanted or "*" in (received, wanted):
        return True
    return bool(set(received.split(",")) & set(wanted.split(",")))


def _convert(input_type: Any, val: Any) -> Any:
    if input_type == "INT":
        return int(val)
    if input_type == "FLOAT":
        return float(val)
    if input_type == "STRING":
        return str(val)
    if input_type == "BOOLEAN":
        return bool(val)
    return val


class PromptValidator:
    """Validates API-format prompts against an `/object_info` catalogue."""

    def __init__(
        self,
        catalogue: dict[str, Any],
        custom_checks: dict[str, dict[str, CustomCheck]] | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.custom_checks = custom_checks or {}

    def validate(self, prompt: dict[str, Any]) -> tuple[bool, Error | None, list[str], dict]:
        """(valid, error, good output ids, node_errors) as ComfyUI's validate_prompt returns."""
        outputs: list[str] = []
        for node_id, node in prompt.items():
            if not isinstance(node, dict) or "class_type" not in node:
                return (
                    False,
                    _top_error(
                        "invalid_prompt",
                        "Cannot execute because a node is missing the class_type property.",
                        f"Node ID '#{node_id}'",
                    ),
                    [],
                    {},
                )
            class_type = node["class_type"]
            info = self.catalogue.get(class_type)
            if info is None:
                return (
                    False,
                    _top_error(
                        "invalid_prompt",
                        f"Cannot execute because node {class_type} does not exist.",
                        f"Node ID '#{node_id}'",
                    ),
                    [],
                    {},
                )
            if info.get("output_node") is True:
                outputs.append(node_id)
        if not outputs:
            return False, _top_error("prompt_no_outputs", "Prompt has no outputs", ""), [], {}

        good: list[str] = []
        errors: list[tuple[str, list[Error]]] = []
        node_errors: dict[str, dict[str, Any]] = {}
        validated: Validated = {}
        for out in outputs:
            try:
                valid, reasons, _ = self._validate_inputs(prompt, out, validated)
            except Exception as ex:
                valid = False
                reasons = [
                    {
                        "type": "exception_during_validation",
                        "message": "Exception when validating node",
                        "details": str(ex),
                        "extra_info": {
                            "exception_type": type(ex).__name__,
                            "traceback": traceback.format_tb(ex.__traceback__),
                        },
                    }
                ]
                validated[out] = (False, reasons, out)
            if valid:
                good.append(out)
                continue
            if reasons:
                errors.append((out, reasons))
            for node_id, (ok, node_reasons, _) in validated.items():
                if ok or not node_reasons:
                    continue
                entry = node_errors.setdefault(
                    node_id,
                    {
                        "errors": node_reasons,
                        "dependent_outputs": [],
                        "class_type": prompt[node_id]["class_type"],
                    },
                )
                entry["dependent_outputs"].append(out)
        if not good:
            details = "\n".join(
                f"{e['message']}: {e['details']}" for _, errs in errors for e in errs
            )
            error = _top_error(
                "prompt_outputs_failed_validation", "Prompt outputs failed validation", details
            )
            return False, error, [], node_errors
        return True, None, good, node_errors

    def _validate_inputs(
        self, prompt: dict[str, Any], unique_id: str, validated: Validated
    ) -> tuple[bool, list[Error], str]:
        if unique_id in validated:
            return validated[unique_id]
        node = prompt[unique_id]
        inputs = node.get("inputs", {})
        class_type = node["class_type"]
        class_inputs = self.catalogue[class_type]["input"]
        order = self.catalogue[class_type].get("input_order", {})
        names = list(order.get("required", [])) + list(order.get("optional", []))
        checks = self.custom_checks.get(class_type, {})
        errors: list[Error] = []
        valid = True
        for name in names:
            input_type, category, extra = _input_info(class_inputs, name)
            if name not in inputs:
                if category == "required":
                    errors.append(
                        {
                            "type": "required_input_missing",
                            "message": "Required input is missing",
                            "details": f"{name}",
                            "extra_info": {"input_name": name},
                        }
                    )
                continue
            val = inputs[name]
            info = [input_type, extra]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append(
                        {
                            "type": "bad_linked_input",
                            "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                            "details": f"{name}",
                            "extra_info": {
                                "input_name": name,
                                "input_config": info,
                                "received_value": val,
                            },
                        }
                    )
                    continue
                # As in ComfyUI, a dangling node id or slot raises here (KeyError / IndexError).
                origin_id = val[0]
                origin_class = prompt[origin_id]["class_type"]
                received_type = tuple(self.catalogue[origin_class]["output"])[val[1]]
                if not _types_match(received_type, input_type):
                    errors.append(
                        {
                            "type": "return_type_mismatch",
                            "message": "Return type mismatch between linked nodes",
                            "details": f"{name}, received_type({received_type}) mismatch input_type({input_type})",
                            "extra_info": {
                                "input_name": name,
                                "input_config": info,
                                "received_type": received_type,
                                "linked_node": val,
                            },
                        }
                    )
                    continue
                try:
                    if self._validate_inputs(prompt, origin_id, validated)[0] is False:
                        valid = False
                        continue
                except Exception as ex:
                    valid = False
                    validated[origin_id] = (
                        False,
                        [
                            {
                                "type": "exception_during_inner_validation",
                                "message": "Exception when validating inner node",
                                "details": str(ex),
                                "extra_info": {
                                    "input_name": name,
                                    "input_config": info,
                                    "exception_message": str(ex),
                                    "exception_type": type(ex).__name__,
                                    "traceback": traceback.format_tb(ex.__traceback__),
                                    "linked_node": val,
                                },
                            }
                        ],
                        origin_id,
                    )
                continue
            try:
                val = _convert(input_type, val)
                inputs[name] = val
            except Exception as ex:
                errors.append(
                    {
                        "type": "invalid_input_type",
                        "message": f"Failed to convert an input value to a {input_type} value",
                        "details": f"{name}, {val}, {ex}",
                        "extra_info": {
                            "input_name": name,
                            "input_config": info,
                            "received_value": val,
                            "exception_message": str(ex),
                        },
                    }
                )
                continue
            if name in checks or (class_type, name) in CHECKED_AT_RUN_TIME:
                continue  # the node's own VALIDATE_INPUTS (or its run) replaces these checks
            error = _range_or_combo_error(name, val, input_type, extra, info)
            if error is not None:
                errors.append(error)
        for name, check in checks.items():
            if name not in inputs or isinstance(inputs[name], list):
                continue
            result = check(inputs[name])
            if result is not True:
                details = name if result is False else f"{name} - {result}"
                errors.append(
                    {
                        "type": "custom_validation_failed",
                        "message": "Custom validation failed for node",
                        "details": details,
                        "extra_info": {"input_name": name},
                    }
                )
        ret = (False, errors, unique_id) if errors or not valid else (True, [], unique_id)
        validated[unique_id] = ret
        return ret


def _range_or_combo_error(
    name: str, val: Any, input_type: Any, extra: dict[str, Any], info: list[Any]
) -> Error | None:
    if "min" in extra and isinstance(val, int | float) and val < extra["min"]:
        return {
            "type": "value_smaller_than_min",
            "message": f"Value {val} smaller than min of {extra['min']}",
            "details": f"{name}",
            "extra_info": {"input_name": name, "input_config": info, "received_value": val},
        }
    if "max" in extra and isinstance(val, int | float) and val > extra["max"]:
        return {
            "type": "value_bigger_than_max",
            "message": f"Value {val} bigger than max of {extra['max']}",
            "details": f"{name}",
            "extra_info": {"input_name": name, "input_config": info, "received_value": val},
        }
    options = combo_options([input_type, extra])
    if options is not None and val not in options:
        config: Any = info
        # ComfyUI does not echo huge lists (e.g. hundreds of scanned model files).
        if len(options) > 20:
            list_info = f"(list of length {len(options)})"
            config = None
        else:
            list_info = str(options)
        return {
            "type": "value_not_in_list",
            "message": "Value not in list",
            "details": f"{name}: '{val}' not in {list_info}",
            "extra_info": {"input_name": name, "input_config": config, "received_value": val},
        }
    return None


def _top_error(kind: str, message: str, details: str) -> Error:
    return {"type": kind, "message": message, "details": details, "extra_info": {}}
