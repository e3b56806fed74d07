"""The option table: -o parsing (ossfs spellings), validation, derived defaults, --help."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from ossmount.cache.store import CacheStore
from ossmount.cli import _parse_mount_args, build_parser
from ossmount.config import OPTIONS, MountConfig, build_config, parse_o_options
from ossmount.emulator.store import valid_bucket_name as emulator_valid_bucket_name
from ossmount.errors import ExitCode, StartupError
from ossmount.mount import _client_config, _startup_error
from ossmount.oss import AccessDenied, BadResponse, OssConfig
from ossmount.oss.addressing import valid_bucket_name

MiB = 1024 * 1024


def _config(source: str = "bucket-1", *o: str) -> MountConfig:
    raw, ignored = parse_o_options(o)
    return build_config(source, "/mnt", raw, foreground=True, ignored=ignored)


def test_an_ossfs_fstab_line_parses() -> None:
    raw, ignored = parse_o_options(
        [
            "_netdev,nofail,allow_other,url=http://127.0.0.1:9000,use_cache=/tmp/c,"
            "parallel_count=8,multipart_size=16,stat_cache_expire=30,max_stat_cache_size=5000,"
            "uid=1000,gid=1000,umask=027,dbglevel=warn,x-systemd.automount,defaults,ro,noexec"
        ]
    )
    config = build_config("bkt:/a/b/", "/mnt", raw, foreground=False, ignored=ignored)
    assert config.bucket == "bkt"
    assert config.prefix == "a/b/"
    assert config.endpoint == "http://127.0.0.1:9000"
    assert config.cache_dir == Path("/tmp/c")
    assert config.parallel_count == 8
    assert config.part_size == 16 * 1024 * 1024
    assert config.stat_cache_expire == 30.0
    assert config.max_stat_cache_size == 5000
    assert config.allow_other is True
    assert (config.uid, config.gid, config.umask) == (1000, 1000, 0o27)
    assert config.log_level == "WARNING"
    assert set(config.ignored_options) >= {"_netdev", "nofail", "x-systemd.automount", "ro"}


def test_region_is_derived_from_an_oss_endpoint_and_endpoint_from_region() -> None:
    raw, _ = parse_o_options(["url=https://oss-eu-central-1-internal.aliyuncs.com"])
    assert build_config("b12", "/m", raw, foreground=True, ignored=[]).region == "eu-central-1"
    raw, _ = parse_o_options(["region=ap-southeast-1"])
    config = build_config("b12", "/m", raw, foreground=True, ignored=[])
    assert config.endpoint == "https://oss-ap-southeast-1.aliyuncs.com"


@pytest.mark.parametrize(
    ("source", "opts", "needle"),
    [
        ("b12", ("nosuchopt=1",), "unknown mount option -o nosuchopt"),
        ("b12", ("parallel_count=0",), "parallel_count"),
        ("b12", ("parallel_count=many",), "'many'"),
        ("b12", ("umask=999",), "umask"),
        ("b12", ("url",), "needs a value"),
        ("Bad_Bucket", (), "invalid bucket name"),
        ("b12:/a/../b", (), "invalid prefix"),
        ("b12", ("url=ftp:/x y",), "bad endpoint"),
    ],
)
def test_bad_options_are_usage_errors_naming_the_option(
    source: str, opts: tuple[str, ...], needle: str
) -> None:
    with pytest.raises(StartupError) as info:
        _config(source, *opts)
    assert info.value.code == ExitCode.USAGE
    assert needle in str(info.value)


def test_help_lists_every_option_with_its_o_spelling_and_real_default() -> None:
    text = " ".join(build_parser().format_help().split())
    for option in OPTIONS:
        assert option.long_flag in text
        for name in option.all_o_names:
            assert f"-o {name}" in text or f"/{name}" in text
    assert "(default: 8)" in text  # part size
    assert "exit codes:" in text


def test_readme_option_table_is_generated_from_the_declaration() -> None:
    from pathlib import Path

    from ossmount.config import options_markdown

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    begin, end = "<!-- options:begin -->\n", "<!-- options:end -->"
    table = readme[readme.index(begin) + len(begin) : readme.index(end)]
    assert table == options_markdown(), "README options table is stale: regenerate it"


def test_default_cache_dirs_differ_per_bucket_and_prefix_so_mounts_do_not_collide() -> None:
    def cache_dir(source: str) -> Path:
        raw, ignored = parse_o_options([])
        return build_config(source, "/m", raw, foreground=True, ignored=ignored).cache_dir

    a, b, a_sub, a_other = (
        cache_dir("aaa"),
        cache_dir("bbb"),
        cache_dir("aaa:/x"),
        cache_dir("aaa:/y"),
    )
    assert len({a, b, a_sub, a_other}) == 4
    assert a.name == "aaa"
    assert a_sub.name.startswith("aaa-")
    assert cache_dir("aaa:/x/") == a_sub


# ------------------------------------------------------------- one declaration, one rule


def test_every_option_is_a_config_field_filled_from_its_declaration() -> None:
    """No hand mapping: each option's value lands in the MountConfig field of its name."""
    names = {f.name for f in dataclasses.fields(MountConfig)}
    assert {o.name for o in OPTIONS} <= names
    config = _config("b12")
    for option in OPTIONS:
        if option.default is not None:
            assert getattr(config, option.name) == option.default, option.name
    samples = {"dir_prefetch": "3", "max_gets": "7", "readahead_mb": "2", "addressing": "path"}
    raw, _ = parse_o_options([",".join(f"{k}={v}" for k, v in samples.items())])
    config = build_config("b12", "/m", raw, foreground=True, ignored=[])
    assert (config.dir_prefetch, config.max_gets, config.readahead_bytes) == (3, 7, 2 * MiB)
    assert config.addressing == "path"


def test_the_client_config_takes_the_mount_config_as_is() -> None:
    client = _client_config(_config("b12", "url=http://127.0.0.1:9000"))
    assert client.addressing == "auto"
    assert client.resolved_addressing() == "path"
    assert client.signature_version == "v4"
    anonymous = _client_config(_config("b12", "url=http://127.0.0.1:9000", "public_bucket"))
    assert anonymous.signature_version == "anonymous"


def test_rw_makes_a_read_write_mount_ro_and_the_default_stay_read_only() -> None:
    """Issue 15: `-o rw` (the peers' write workloads pass it) is now an option of ours; `ro`
    is accepted and ignored, and without `rw` the mount is read-only."""
    raw, ignored = parse_o_options(["rw,allow_other,ro"])
    assert ignored == ["ro"]
    assert raw == {"allow_other": "1", "rw": "1"}
    assert _config("b12", "rw").rw is True
    assert _config("b12").rw is False


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("abc", True),
        ("a" * 63, True),
        ("my-bucket-01", True),
        ("a--b", True),  # OSS's rule says nothing against it
        ("ab", False),  # the cache store used to take 2 characters
        ("abc-", False),  # ... and a trailing hyphen
        ("-abc", False),
        ("a" * 64, False),
        ("Abc", False),
        ("a_b", False),
        ("a.b", False),
    ],
)
def test_one_bucket_name_rule_for_the_mount_the_cache_and_the_emulator(
    name: str, valid: bool, tmp_path: Path
) -> None:
    def accepted(make: Callable[[], object], refusal: type[Exception]) -> bool:
        try:
            make()
        except refusal:
            return False
        return True

    assert valid_bucket_name(name) is valid
    assert emulator_valid_bucket_name(name) is valid
    assert accepted(lambda: _config(name), StartupError) is valid
    assert accepted(lambda: CacheStore(tmp_path, bucket=name), ValueError) is valid


@pytest.mark.parametrize(
    ("endpoint", "region"),
    [
        ("oss-cn-beijing.aliyuncs.com", "cn-beijing"),
        ("https://oss-eu-central-1-internal.aliyuncs.com/", "eu-central-1"),
        ("http://OSS-ap-southeast-1.aliyuncs.com:443", "ap-southeast-1"),
    ],
)
def test_the_mount_and_the_client_derive_the_same_region_and_url(
    endpoint: str, region: str
) -> None:
    config = _config("b12", f"url={endpoint}")
    client = OssConfig(endpoint=endpoint, bucket="b12")
    assert config.region == client.resolved_region() == region
    assert config.endpoint == client.base_url().rstrip("/")


def test_a_bad_listing_at_start_up_is_a_bad_reply_not_access_denied() -> None:
    """Issue 14 finding 7, the oversized case (the mount test covers a malformed one)."""
    config = _config("b12", "url=http://127.0.0.1:9000")
    too_big = BadResponse(200, "ResponseTooLarge", "reply body over 8 bytes", bucket="b12")
    error = _startup_error(too_big, config)
    assert error.code == ExitCode.BAD_REPLY
    assert "bucket 'b12' at http://127.0.0.1:9000" in str(error)
    assert "not a valid OSS listing: reply body over 8 bytes" in str(error)
    assert _startup_error(AccessDenied(403, "AccessDenied", "no"), config).code == ExitCode.ACCESS


def test_a_long_flag_and_an_o_option_reach_the_same_field_and_the_flag_wins() -> None:
    parser = build_parser()
    config = _parse_mount_args(parser, ["b12", "/m", "-o", "dir_prefetch=2,multipart_size=4"])
    assert (config.dir_prefetch, config.part_size) == (2, 4 * MiB)
    config = _parse_mount_args(parser, ["b12", "/m", "-o", "dir_prefetch=2", "--dir-prefetch=3"])
    assert config.dir_prefetch == 3


def test_rw_from_mount_8_is_its_default_and_read_write_asks_for_writes() -> None:
    """mount(8) passes `rw` on every mount and mount.fuse3 adds dev/suid: an fstab line
    without `read_write` must stay read-only."""
    raw, ignored = parse_o_options(["rw,dev,suid,allow_other"])
    assert "rw" not in raw
    assert "rw" in ignored
    raw, _ = parse_o_options(["rw,dev,suid,read_write"])
    assert raw["rw"] == "1"
