"""A person in the Dagster UI: add a request as a new partition, materialize it, read the result.

Path through the UI (what docs/ui.md describes):
  Catalog -> generated_video -> "Materialize…" -> (confirm the missing-upstream warning) ->
  Config -> "Add config" -> paste the request YAML -> "Save config" ->
  "Add a partition" -> name it -> "Save" -> "Launch 1 run" -> toast "View" -> run page
  -> Partitions tab of generated_video -> metadata, "[Show Markdown]" poster -> Lineage.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.browser import NO_BROWSER, UI, browser_available, text_is
from tests.e2e.conftest import E2EStack, publish_to_docs
from tests.e2e.requests_config import new_partition_key, request_spec, run_config_yaml

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not browser_available(), reason=NO_BROWSER)]

OPS_IN_ORDER = [
    "validate_requests",
    "launch_pod",
    "wait_for_ready",
    "submit_workflow",
    "harvest_outputs",
    "terminate_pod",
]
LINEAGE = ["video_requests", "generated_video", "video_preview", "video_catalog"]
RUN_TIMEOUT_S = 240.0


def metadata_value(page_text: str, key: str) -> str | None:
    """Value of a row in a Dagster metadata table, from the page's visible text."""
    match = re.search(rf"^{re.escape(key)}[ \t]*\n\s*(\S+)", page_text, re.MULTILINE)
    return match.group(1) if match else None


def open_launch_dialog(ui: UI) -> None:
    ui.click("//button[contains(normalize-space(),'Materialize')]", what="the Materialize button")
    dialog = "//*[contains(normalize-space(),'Launch runs to materialize generated_video')]"
    confirm = f"//button[{text_is('Confirm')}]"
    ui.find(f"{dialog} | {confirm}", what="the launch dialog")
    # Nothing upstream is materialized on a fresh instance; Dagster asks first. A request given
    # in launch config needs no video_requests run, so a person confirms.
    for element in ui.driver.find_elements("xpath", confirm):
        if element.is_displayed():
            element.click()
    ui.find(dialog, what="the partition dialog")


def add_request_and_launch(ui: UI, partition_key: str, config_yaml: str) -> None:
    ui.click(
        "//*[normalize-space()='Config' and not(*[normalize-space()='Config'])]", what="Config"
    )
    ui.button("Add config")
    ui.set_config_yaml(config_yaml)
    ui.find(f"//*[contains(normalize-space(),{partition_key!r})]", what="the pasted config")
    ui.screenshot("config-editor")
    ui.button("Save config")
    ui.button("Add a partition")
    name = ui.find("//input[@placeholder='name']", what="the partition name box")
    name.send_keys(partition_key)
    ui.button("Save")
    ui.find(f"//button[{text_is('Launch 1 run')}]", what="'Launch 1 run'")


def follow_launched_run(ui: UI, partition_key: str) -> str:
    """Click the toast's View (or, if a slow machine let the toast fade, the run's row in Runs);
    returns the run id from the run page's URL."""
    launch = f"//button[{text_is('Launch 1 run')}]"
    ui.wait(
        lambda d: not any(e.is_displayed() for e in d.find_elements("xpath", launch)),
        what="the launch dialog to close (run accepted)",
    )
    try:
        ui.click(f"//button[{text_is('View')}] | //a[{text_is('View')}]", 15, "the toast")
    except AssertionError:
        ui.open("/runs")
        run_link = "a[contains(@href,'/runs/')]"
        tag = f"//*[normalize-space()={f'partition: {partition_key}'!r}]"
        ui.click(f"{tag}/ancestor::*[.//{run_link}][1]//{run_link}", what="the run in Runs")
    ui.wait(lambda d: re.search(r"/runs/[0-9a-f-]{36}", d.current_url), what="the run page")
    return re.search(r"/runs/([0-9a-f-]{36})", ui.driver.current_url).group(1)  # type: ignore[union-attr]


@pytest.mark.timeout(480)
def test_new_request_materialized_from_the_ui(e2e_stack: E2EStack, browser_ui: UI) -> None:
    ui = browser_ui
    key = new_partition_key("e2e-ui-fox")
    spec = request_spec("A red fox trotting through fresh snow, slow tracking shot", seed=2002)
    print(f"e2e screenshots of this test: {ui.shots_dir}")

    # 1. the asset, as found in the catalog
    ui.open("/assets/generated_video")
    ui.find(
        "//*[contains(normalize-space(),'A WAN 2.2 video rendered by ComfyUI')]", what="asset page"
    )
    publish_to_docs(ui.screenshot("asset-page"), "ui-asset.png")

    # 2. Materialize -> config + new partition -> launch
    open_launch_dialog(ui)
    add_request_and_launch(ui, key, run_config_yaml(key, spec))
    publish_to_docs(ui.screenshot("launch-dialog"), "ui-launch-dialog.png")
    ui.button("Launch 1 run")
    run_id = follow_launched_run(ui, key)

    # 3. the run succeeds; its ops ran in the designed order
    ui.wait_run_status({"Success"}, RUN_TIMEOUT_S, stop_on={"Failure", "Canceled"})
    assert ui.step_starts() == OPS_IN_ORDER
    publish_to_docs(ui.screenshot("run-success"), "ui-run.png")

    # 4. the partition's metadata: generation time, upload latency, cost, R2 URL
    ui.open(f"/assets/generated_video?view=partitions&partition={key}")
    ui.find("//*[normalize-space()='r2_url']", what="the partition's metadata")
    ui.screenshot("partition-metadata")
    text = ui.body_text()
    assert run_id[:8] in text
    values = {
        k: metadata_value(text, k) for k in ("generation_time_s", "upload_latency_s", "cost_usd")
    }
    assert all(v is not None for v in values.values()), values
    assert float(values["generation_time_s"] or 0) > 0
    assert float(values["upload_latency_s"] or -1) >= 0
    assert float(values["cost_usd"] or 0) > 0
    url = metadata_value(text, "r2_url") or ""
    r2 = e2e_stack.devstack.env
    assert url.startswith(f"s3://{r2['R2_BUCKET']}/outputs/"), url
    assert r2["R2_ACCESS_KEY_ID"] not in text  # no presigned link (it carries the key id)
    assert f"{key}-{run_id[:8]}_00001_.mp4" in url
    cost_row = ui.find("//*[normalize-space()='generation_time_s']", what="generation_time_s row")
    ui.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", cost_row)
    publish_to_docs(ui.screenshot("partition-timings-cost"), "ui-metadata.png")

    # 5. the poster frame renders (a data: PNG in the markdown metadata) and really loaded
    ui.driver.execute_script("window.scrollTo(0, 0)")
    ui.click("//a[normalize-space()='[Show Markdown]']", what="the poster's [Show Markdown]")
    poster = ui.find(f"//*[@role='dialog']//img[@alt={key!r}]", what="the poster image")
    ui.wait(lambda d: d.execute_script("return arguments[0].complete", poster), what="poster load")
    width = ui.driver.execute_script("return arguments[0].naturalWidth", poster)
    assert width > 0
    publish_to_docs(ui.screenshot("poster"), "ui-poster.png")
    ui.button("Close")

    # 6. lineage: video_requests -> generated_video -> video_preview -> video_catalog
    ui.click(
        "//a[normalize-space()='Lineage' and contains(@href,'asset-groups')]", what="Lineage nav"
    )
    xs = ui.wait(
        lambda _d: (found := ui.graph_node_x(LINEAGE)) and len(found) == len(LINEAGE) and found,
        what="the four asset nodes in the lineage graph",
    )
    # Dagster lays the graph out left to right by dependency: strictly increasing x means each
    # asset sits downstream of the one before it.
    assert [xs[name] for name in LINEAGE] == sorted({xs[name] for name in LINEAGE}), xs
    ui.wait(lambda _d: "Loading" not in ui.body_text(), what="the lineage nodes' live data")
    publish_to_docs(ui.screenshot("lineage"), "ui-lineage.png")

    # 7. nothing left running on the (emulated) RunPod account
    pods = e2e_stack.pods_of_run(run_id)
    assert len(pods) == 1 and pods[0]["desired_status"] == "TERMINATED", pods
    assert e2e_stack.live_pods() == []
