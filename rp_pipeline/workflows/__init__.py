"""ComfyUI workflows: the workflows folder (API JSON + parameter maps), checked against the node
catalogue and the model manifest, parameter validation and injection.

validate_params("wan22_t2v_14b", {"prompt": "a fox", "frames": 81})   # before any pod
rendered = render_workflow("wan22_t2v_14b", {"prompt": "a fox"}, request_id="req-1")
client.submit(rendered.api_json)
"""

from rp_pipeline.workflows.folder import list_workflows, workflows_dir
from rp_pipeline.workflows.render import (
    RenderedWorkflow,
    WorkflowParamError,
    default_prefix,
    defaults,
    get_workflow,
    render_workflow,
    validate_params,
    workflow_problems,
)
from rp_pipeline.workflows.spec import (
    STANDARD_PARAMS,
    Param,
    WorkflowError,
    WorkflowSpec,
    workflow_hash,
)

__all__ = [
    "STANDARD_PARAMS",
    "Param",
    "RenderedWorkflow",
    "WorkflowError",
    "WorkflowParamError",
    "WorkflowSpec",
    "default_prefix",
    "defaults",
    "get_workflow",
    "list_workflows",
    "render_workflow",
    "validate_params",
    "workflow_hash",
    "workflow_problems",
    "workflows_dir",
]
