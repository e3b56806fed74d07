"""A process that commits a staged file and gets killed (-9) mid-upload by
test_write_kill_resume.py. Prints the uploader's "part N recorded" lines (DEBUG) to stdout so
the test kills it at a known point. Usage: write_child.py ENDPOINT DATA LEDGER PART_SIZE"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import trio

from ossmount.oss import Credentials, OssClient, OssConfig, StaticCredentialsProvider
from ossmount.oss._writes import OssWrites
from ossmount.write import StagedFile, Uploader, UploadLedger, UploadSettings


async def main(endpoint: str, data: str, ledger: str, part_size: int) -> None:
    logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="%(message)s")
    logging.getLogger("ossmount.write.session").setLevel(logging.DEBUG)
    config = OssConfig(endpoint, "bkt", region="cn-hangzhou", read_timeout_s=120)
    async with OssClient(config, StaticCredentialsProvider(Credentials("ak", "sk"))) as client:
        settings = UploadSettings(part_size=part_size, single_put_max=part_size, parallel=1)
        uploader = Uploader(OssWrites(client), UploadLedger(Path(ledger)), settings)
        await uploader.commit(StagedFile.beside(Path(data)), uploader.new_record("killed"))
    print("committed", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
