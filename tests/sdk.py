"""Reading back through the official SDK (alibabacloud-oss-v2, unmodified) from the `emu`
fixture's emulator (tests/conftest.py): an independent reader, so a test does not check our
writer with our own client."""

from __future__ import annotations

import alibabacloud_oss_v2 as oss

from ossmount.emulator import Emulator


def sdk(emu: Emulator) -> oss.Client:
    cfg = oss.config.load_default()
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider("ak", "sk")
    cfg.region = "cn-hangzhou"
    cfg.endpoint = emu.endpoint
    return oss.Client(cfg)


def sdk_get(emu: Emulator, key: str) -> bytes:
    """The body of `key` in bucket ``bkt``."""
    body: bytes = sdk(emu).get_object(oss.GetObjectRequest(bucket="bkt", key=key)).body.read()
    return body
