"""Resources of the Dagster code location (RunPod, R2, ComfyUI); each module stands alone."""
