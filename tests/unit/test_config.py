"""The option table: -o parsing (ossfs spellings), validation, derived defaults, --help."""

from __future__ import annotations

from pathlib import Path

import pytest

from ossmount.cli import build_parser
from ossmount.config import OPTIONS, build_config, parse_o_options
from ossmount.errors import ExitCode, StartupError


def _config(source: str = "bucket-1", *o: str) -> object:
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
