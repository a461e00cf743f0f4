"""The naive sync's per-file uploader (started by r2_sync.sh once per new file).

One process per file: builds a boto3 client, uploads to outputs/YYYY-MM-DD/<filename> with
retries and exponential backoff, exits. Kept deliberately simple (no queue,
no metadata, no subdirectory in the key) because it is the baseline the benchmark measures.
"""

import os
import sys
import time
from datetime import UTC, datetime

import boto3
from botocore.config import Config


def get_r2_client():
    return boto3.client(
        "s3",
        endpoint_url=os.getenv("R2_ENDPOINT"),
        aws_access_key_id=os.getenv("R2_ACCESS_KEY_ID"),
        aws_secret_access_key=os.getenv("R2_SECRET_ACCESS_KEY"),
        config=Config(signature_version="s3v4"),
        region_name="auto",
    )


def upload_file(file_path, bucket, retries=3, backoff=2):
    # Retry logic with exponential backoff
    # Organized path: outputs/YYYY-MM-DD/filename
    key = f"outputs/{datetime.now(UTC):%Y-%m-%d}/{os.path.basename(file_path)}"
    client = get_r2_client()
    for attempt in range(retries):
        try:
            client.upload_file(file_path, bucket, key)
            return key
        except Exception as exc:
            if attempt == retries - 1:
                print(f"upload of {file_path} failed: {exc}", file=sys.stderr)
                raise
            time.sleep(backoff**attempt)
    return None


if __name__ == "__main__":
    upload_file(sys.argv[1], os.environ["R2_BUCKET"])
