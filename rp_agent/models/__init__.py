"""Model weights onto the network volume: parallel, resumable, sha256-verified downloads.

`python -m rp_agent.models` is what docker/download_models.sh runs. Modules: `manifest` (which
files, from where), `http` (one HTTP request with the hub's redirect rules), `download` (ranges,
part files, resume, verification), `markers` (skip verified files on a warm volume), `progress`
(log lines and the boot-status file), `__main__` (the command).
"""
