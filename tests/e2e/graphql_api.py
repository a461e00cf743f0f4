"""The Dagster GraphQL API as a person's own tool would use it: DagsterGraphQLClient for runs,
plain GraphQL for the two things the client has no method for (add a dynamic partition, read
a partition's materialization metadata)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlparse

import requests
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from rp_pipeline.video_requests.store import VIDEO_REQUESTS_PARTITIONS

GENERATE_JOB = "generate_videos"
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}

REPOSITORIES = (
    "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"
)
ADD_PARTITION = """
mutation($selector: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $selector, partitionsDefName: $name, partitionKey: $key) {
    __typename
    ... on AddDynamicPartitionSuccess { partitionKey }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}"""
MATERIALIZATIONS = """
query($partition: String!) {
  assetOrError(assetKey: {path: ["generated_video"]}) {
    ... on Asset {
      assetMaterializations(partitions: [$partition], limit: 1) {
        runId
        partition
        metadataEntries {
          label
          ... on FloatMetadataEntry { floatValue }
          ... on IntMetadataEntry { intValue }
          ... on TextMetadataEntry { text }
          ... on UrlMetadataEntry { url }
          ... on PathMetadataEntry { path }
          ... on MarkdownMetadataEntry { mdStr }
        }
      }
    }
  }
}"""
STEP_STARTS = """
query($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection { events { __typename ... on ExecutionStepStartEvent { stepKey } } }
  }
}"""


class GraphQLApi:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        parsed = urlparse(self.base_url)
        self.client = DagsterGraphQLClient(parsed.hostname or "127.0.0.1", port_number=parsed.port)

    def query(self, document: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = requests.post(
            f"{self.base_url}/graphql",
            json={"query": document, "variables": variables or {}},
            timeout=60,
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise DagsterGraphQLClientError(str(body["errors"]))
        return dict(body["data"])

    def repository_selector(self) -> dict[str, str]:
        (repo,) = self.query(REPOSITORIES)["repositoriesOrError"]["nodes"]
        return {"repositoryLocationName": repo["location"]["name"], "repositoryName": repo["name"]}

    def add_partition(self, key: str) -> None:
        variables = {
            "selector": self.repository_selector(),
            "name": VIDEO_REQUESTS_PARTITIONS,
            "key": key,
        }
        result = self.query(ADD_PARTITION, variables)["addDynamicPartition"]
        if result["__typename"] != "AddDynamicPartitionSuccess":
            raise DagsterGraphQLClientError(f"addDynamicPartition: {result}")

    def launch(self, key: str, run_config: dict[str, Any]) -> str:
        return self.client.submit_job_execution(
            GENERATE_JOB, run_config=run_config, tags={"dagster/partition": key}
        )

    def wait_finished(self, run_id: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.client.get_run_status(run_id).value
            if status in FINISHED:
                return str(status)
            time.sleep(1.0)
        raise TimeoutError(f"run {run_id} not finished after {timeout_s:.0f} s")

    def started_steps(self, run_id: str) -> list[str]:
        events = self.query(STEP_STARTS, {"runId": run_id})["logsForRun"]["events"]
        return [e["stepKey"] for e in events if e["__typename"] == "ExecutionStepStartEvent"]

    def latest_metadata(self, partition: str) -> tuple[str, dict[str, Any]]:
        """(run id, label -> value) of the partition's latest materialization."""
        asset = self.query(MATERIALIZATIONS, {"partition": partition})["assetOrError"]
        (record,) = asset["assetMaterializations"]
        values = {}
        for entry in record["metadataEntries"]:
            fields = [v for k, v in entry.items() if k != "label"]
            values[entry["label"]] = fields[0] if fields else None
        return record["runId"], values
