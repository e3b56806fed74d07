"""Alibaba Cloud OSS client: signing, credentials, typed errors, and the async `OssClient`."""

from __future__ import annotations
