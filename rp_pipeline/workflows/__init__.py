"""Shipped WAN 2.2 ComfyUI workflows (API format) with parameter validation and injection.

validate_params("wan22_t2v_14b", {"prompt": "a fox", "frames": 81})   # before any pod
rendered = render_workflow("wan22_t2v_14b", {"prompt": "a fox"}, request_id="req-1")
client.submit(rendered.api_json)
"""

from rp_pipeline.workflows.render import (
    RenderedWorkflow,
    WorkflowParamError,
    default_prefix,
    defaults,
    get_workflow,
    list_workflows,
    load_custom_workflow,
    render_workflow,
    validate_params,
)
from rp_pipeline.workflows.spec import PARAMS, WorkflowError, WorkflowSpec, workflow_hash

__all__ = [
    "PARAMS",
    "RenderedWorkflow",
    "WorkflowError",
    "WorkflowParamError",
    "WorkflowSpec",
    "default_prefix",
    "defaults",
    "get_workflow",
    "list_workflows",
    "load_custom_workflow",
    "render_workflow",
    "validate_params",
    "workflow_hash",
]
