"""`rp-video url KEY`: a download link for a video in R2, made on demand.

Asset metadata stores where a video is (`r2_key`, `r2_url` = `s3://<bucket>/<key>`), never a
presigned link: SigV4 links embed the R2 access key id, and event logs are kept forever and read
by everyone with UI access. A person who needs a link makes one here, valid for `--expires`
seconds, with the R2 credentials of their own environment.

    rp-video url s3://videos/outputs/2026-01-01/pod/video/wan22_ti2v_5b/a-fox-0123abcd_00001_.mp4
    rp-video url outputs/.../a-fox-0123abcd_00001_.mp4 --expires 600
"""

from __future__ import annotations

import argparse
import sys

from rp_pipeline.integrations.r2.resource import MAX_PRESIGN_EXPIRY_S, R2Resource
from rp_pipeline.settings import value_of
from rp_pipeline.tools.help import Parser, package_version

_NEEDED = ("R2_ENDPOINT", "R2_BUCKET", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY")


class UsageError(Exception):
    """Something the user can fix; printed as one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="rp-video",
        description="Videos in R2. Reads R2_ENDPOINT, R2_BUCKET, R2_ACCESS_KEY_ID, "
        "R2_SECRET_ACCESS_KEY (e.g. `source .devstack/env`).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    url = sub.add_parser("url", help="print a presigned download link for one object")
    url.add_argument("key", help="the object's r2_key or r2_url (s3://bucket/key) from metadata")
    url.add_argument(
        "--expires",
        type=int,
        default=None,
        help=f"seconds the link works (default: R2Resource.presign_expiry_s, "
        f"at most {MAX_PRESIGN_EXPIRY_S})",
    )
    return parser


def r2_from_env() -> R2Resource:
    values = {name: value_of(name) or "" for name in _NEEDED}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise UsageError(f"{', '.join(missing)} not set: export the R2 settings first")
    return R2Resource(
        endpoint=values["R2_ENDPOINT"],
        bucket=values["R2_BUCKET"],
        access_key_id=values["R2_ACCESS_KEY_ID"],
        secret_access_key=values["R2_SECRET_ACCESS_KEY"],
    )


def object_key_of(r2: R2Resource, given: str) -> str:
    if not given.startswith("s3://"):
        return given.lstrip("/")
    bucket, _, key = given[len("s3://") :].partition("/")
    if bucket != r2.bucket:
        raise UsageError(f"{given} is in bucket {bucket!r}, but R2_BUCKET is {r2.bucket!r}")
    return key


def presign_url(key: str, expires_s: int | None) -> str:
    if expires_s is not None and not 1 <= expires_s <= MAX_PRESIGN_EXPIRY_S:
        raise UsageError(f"--expires must be 1..{MAX_PRESIGN_EXPIRY_S} seconds, got {expires_s}")
    r2 = r2_from_env()
    object_key = object_key_of(r2, key)
    if not object_key or r2.head(object_key) is None:
        raise UsageError(f"no object {object_key!r} in bucket {r2.bucket!r}")
    return r2.presign(object_key, expires_s)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        print(presign_url(args.key, args.expires))
    except UsageError as exc:
        print(f"rp-video: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # one line, never a traceback (e.g. R2 unreachable)
        line = " ".join(str(exc).split())
        print(f"rp-video: error: {type(exc).__name__}: {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
