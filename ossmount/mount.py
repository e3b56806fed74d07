"""Composition root: build the client, cache, tree and prefetcher, mount, serve, shut down.

Order of start-up, each step failing with a StartupError (one line, an exit code):
  1. mountpoint and /dev/fuse checks (cheap, local)
  2. credentials, then one ListObjectsV2 of the mount's prefix (max-keys 1): proves the
     endpoint answers, the bucket exists and we may list it, before anything is mounted
  3. cache dir: created, locked (one mount per cache dir)
  4. pyfuse3.init, then the service nursery runs pyfuse3.main and the downloads; readiness is
     reported once a stat of the mountpoint is answered by us, and the mount's kernel
     read-ahead is raised then (measurements.md §5: 1 MiB reads, several in flight).

Under systemd (`$NOTIFY_SOCKET`, see ossmount.service.notify): steps 2 and 3 extend the start
timeout while they run, `READY=1` goes with the readiness above, a `STATUS=` line follows the
downloads and the cache, `WATCHDOG=1` comes from this event loop, `STOPPING=1` at shutdown.
SIGHUP drops the metadata caches (ours and the kernel's names and attributes) and re-reads the
credentials (`RELOADING=1` … `READY=1`).

Shutdown (unmount by `fusermount3 -u`/`umount`, or SIGTERM/SIGINT → pyfuse3.terminate):
pyfuse3.main returns, the nursery is cancelled (downloads stop mid-part; unrecorded parts are
simply fetched again later), every checkpoint is flushed, the cache lock is released. The
control socket (ossmount.service.control) lives from just before the kernel mount until the
nursery is cancelled, and is removed then.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pyfuse3
import trio

from ossmount.cache.errors import CacheError
from ossmount.cache.store import CacheStore
from ossmount.cache.writeback import watch_writeback
from ossmount.cachecmd import record_mount
from ossmount.config import MountConfig
from ossmount.daemon import Readiness
from ossmount.errors import ExitCode, StartupError
from ossmount.fs.filesystem import FileSystem
from ossmount.fs.ops import Operations, Presentation, PyfuseKernel, drop_kernel_caches
from ossmount.fs.ownattrs import OwnAttrs
from ossmount.fs.recovery import Recovered, recover_staged
from ossmount.fs.shown import ShownAttrs
from ossmount.fs.shownfile import SHOWN_FILE, ShownSaver, load_shown
from ossmount.fs.staged import StagedCounts, count_staged
from ossmount.fs.staging import Staging
from ossmount.oss import (
    AccessDenied,
    BadResponse,
    CredentialsError,
    CredentialsProvider,
    InvalidAccessKeyId,
    NoSuchBucket,
    OssClient,
    OssConfig,
    OssError,
    OssTransportError,
    OssWrites,
    SignatureDoesNotMatch,
    resolve_credentials,
)
from ossmount.prefetch import PrefetchConfig, Prefetcher
from ossmount.service.control import StoreControl, serve_control
from ossmount.service.metrics import MountMetrics, install, serve_metrics
from ossmount.service.notify import Notifier
from ossmount.service.reload import ReloadableCredentials, describe_mount
from ossmount.tree.listing import Namespace
from ossmount.write import Uploader, UploadLedger, UploadSettings
from ossmount.write.owedlog import STAGED, OwedLog, owed_path, split_owed
from ossmount.write.waiting import not_on_oss

__all__ = ["check_mountpoint", "run_mount"]

log = logging.getLogger(__name__)

# Start-up work that may take long (retried LIST, scanning a large cache) renews systemd's
# start timeout by this much, every half of it, while it runs.
_EXTEND_USEC = 30_000_000
_WRITEBACK_DRAIN_S = 60
# Empty staging files kept made ahead for new files (fs/staging.py `keep_spares`).
SPARE_FILES = 8
# The attributes the mount stored are saved this often when they changed (fs/shownfile.py):
# what a `kill -9` can lose of them, which then show the defaults after the remount.
_SAVE_SHOWN_S = 30.0


def check_mountpoint(path: Path) -> None:
    if not path.exists():
        raise StartupError(f"mountpoint {path} does not exist", ExitCode.MOUNTPOINT)
    if not path.is_dir():
        raise StartupError(f"mountpoint {path} is not a directory", ExitCode.MOUNTPOINT)
    if os.path.ismount(path):
        raise StartupError(
            f"{path} is already a mountpoint (unmount it first: fusermount3 -u {path})",
            ExitCode.MOUNTPOINT,
        )
    try:
        if any(path.iterdir()):
            raise StartupError(f"mountpoint {path} is not empty", ExitCode.MOUNTPOINT)
    except PermissionError as exc:
        raise StartupError(
            f"cannot read mountpoint {path}: {exc.strerror}", ExitCode.MOUNTPOINT
        ) from exc
    if not os.path.exists("/dev/fuse"):
        raise StartupError(
            "/dev/fuse is missing: load the fuse module (modprobe fuse) or install fuse3",
            ExitCode.FUSE,
        )


def _startup_error(exc: Exception, config: MountConfig) -> StartupError:
    where = f"bucket {config.bucket!r} at {config.endpoint}"
    if isinstance(exc, CredentialsError):
        return StartupError(str(exc), ExitCode.CREDENTIALS)
    if isinstance(exc, NoSuchBucket):
        return StartupError(f"{where}: the bucket does not exist", ExitCode.BUCKET)
    if isinstance(exc, InvalidAccessKeyId | SignatureDoesNotMatch):
        return StartupError(
            f"{where}: credentials refused ({exc.code}): check the key id and secret",
            ExitCode.ACCESS,
        )
    if isinstance(exc, AccessDenied):
        return StartupError(
            f"{where}: access denied listing the bucket ({exc.message})", ExitCode.ACCESS
        )
    if isinstance(exc, OssTransportError):
        return StartupError(f"cannot reach {config.endpoint}: {exc}", ExitCode.ENDPOINT)
    if isinstance(exc, BadResponse):  # unparsable, hostile or oversized XML: not a refusal
        request = f", request id {exc.request_id}" if exc.request_id else ""
        return StartupError(
            f"{where}: the endpoint sent a reply that is not a valid OSS listing: "
            f"{exc.message} ({exc.code}, HTTP {exc.status}{request})",
            ExitCode.BAD_REPLY,
        )
    if isinstance(exc, OssError):
        return StartupError(f"{where}: {exc}", ExitCode.ACCESS)
    return StartupError(f"{where}: {exc}", ExitCode.INTERNAL)


def _client_config(config: MountConfig) -> OssConfig:
    signature = "anonymous" if config.anonymous else config.signature_version
    return OssConfig(
        endpoint=config.endpoint,
        bucket=config.bucket,
        region=config.region,
        addressing=config.addressing,
        signature_version=signature,
        connect_timeout_s=config.connect_timeout,
        ca_file=str(config.ca_file) if config.ca_file is not None else None,
        stall_timeout_s=config.stall_timeout,
        max_attempts=config.max_attempts,
        fetch_timeout_s=config.fetch_timeout,
        pool_size=config.max_gets + 4,  # GETs plus listings and HEADs alongside
    )


def _raise_readahead(mountpoint: Path, dev: int, kb: int) -> None:
    """Set the read_ahead_kb of the mount's bdi (device `dev`): the kernel then sends 1 MiB
    reads, several at once. Takes the device, not a stat of the mountpoint: that stat would
    be a FUSE request, and on the trio thread, which answers them, a deadlock whenever the
    kernel does not have the root's attributes cached (seen: a test's first create had
    invalidated them; the daemon hung in getattr for good)."""
    path = Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")
    try:
        path.write_text(str(kb))
    except OSError as exc:
        log.warning(
            "could not set %s to %d (reads stay small and slower): %s", path, kb, exc.strerror
        )
    else:
        log.debug("read_ahead_kb of %s set to %d", mountpoint, kb)


async def run_mount(config: MountConfig, readiness: Readiness) -> None:
    """Mount and serve until unmounted. Raises StartupError before the mount is ready."""
    notifier = Notifier()
    metrics = MountMetrics(bucket=config.bucket, prefix=config.prefix)
    try:
        async with trio.open_nursery() as service:
            service.start_soon(notifier.run)  # watchdog pings from this loop, timeout renewals
            try:
                with install(metrics):  # the OSS client's request/retry counts go here
                    await _mount(config, readiness, notifier, metrics)
            finally:
                service.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise _sole(group) from None  # the CLI maps a bare StartupError to its exit code
    finally:
        notifier.close()


def _sole(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _resolve(config: MountConfig) -> ReloadableCredentials:
    def resolve() -> CredentialsProvider:
        return resolve_credentials(
            config.bucket,
            passwd_file=config.passwd_file,
            credential_process=config.credential_process,
            ram_role=config.ram_role,
            ecs_metadata_endpoint=config.ecs_metadata_endpoint,
            anonymous=config.anonymous,
        )

    return ReloadableCredentials(resolve(), resolve)


async def _mount(
    config: MountConfig, readiness: Readiness, notifier: Notifier, metrics: MountMetrics
) -> None:
    check_mountpoint(config.mountpoint)
    try:
        credentials = _resolve(config)
    except CredentialsError as exc:
        raise _startup_error(exc, config) from exc

    async with OssClient(_client_config(config), credentials) as client:
        try:
            with notifier.extending(_EXTEND_USEC):
                await client.list_page(config.prefix, "/", max_keys=1)
        except (OssError, CredentialsError) as exc:
            raise _startup_error(exc, config) from exc

        max_bytes = config.max_cache_bytes
        try:
            config.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            store = CacheStore(
                config.cache_dir,
                bucket=config.bucket,
                max_bytes=max_bytes,
                min_free=config.min_free_bytes,
            )
            with notifier.extending(_EXTEND_USEC):
                # The scan of a large cache takes a while: in a thread, so the loop keeps
                # renewing the start timeout and pinging the watchdog. Nothing else uses the
                # store yet.
                await trio.to_thread.run_sync(store.lock)
        except (OSError, CacheError) as exc:
            raise StartupError(f"cache dir {config.cache_dir}: {exc}", ExitCode.CACHE) from exc
        record_mount(config)  # for `ossmount cache status` and `warmup`; never raises
        try:
            await _serve(config, client, credentials, store, readiness, notifier, metrics)
        finally:
            store.close()


async def _serve(
    config: MountConfig,
    client: OssClient,
    credentials: ReloadableCredentials,
    store: CacheStore,
    readiness: Readiness,
    notifier: Notifier,
    metrics: MountMetrics,
) -> None:
    """Mount, answer the kernel until unmounted, then stop the downloads and flush."""
    metrics.watch_cache(store.statistics)
    namespace = Namespace(
        client,
        root_prefix=config.prefix,
        ttl_s=config.stat_cache_expire,
        max_entries=config.max_stat_cache_size,
    )
    source = f"{config.bucket}:/{config.prefix}" if config.prefix else config.bucket
    async with trio.open_nursery() as nursery:
        await _start_metrics(config, metrics, nursery)
        prefetcher = _prefetcher(config, client, store, nursery, metrics)
        await _start_control(config, store, prefetcher, nursery)
        nursery.start_soon(watch_writeback, store)
        look = Presentation(
            uid=config.uid,
            gid=config.gid,
            umask=config.umask,
            attr_timeout_s=config.stat_cache_expire,
            writable=config.rw,
            file_bits=config.file_mode,
        )
        shown_path = config.cache_dir / SHOWN_FILE
        shown = await trio.to_thread.run_sync(load_shown, shown_path, config.max_attr_entries)
        saver = ShownSaver(shown, shown_path)
        nursery.start_soon(saver.run, _SAVE_SHOWN_S)
        staging, recovered = (
            await _staging(config, client, nursery, notifier, shown) if config.rw else (None, None)
        )
        if staging is None:
            _warn_of_staged(config.cache_dir)
        if staging is not None:
            staging.keep_spares(SPARE_FILES)  # after the recovery, which drops old ones
            staging.on_outcome = metrics.commit
            staging.on_shed = metrics.staged_shed
            staging.make_room = store.make_room
            saver.leave_out = staging.known.owed_keys
        fs = FileSystem(
            namespace,
            prefetcher,
            look,
            symlinks=client,
            kernel=PyfuseKernel(),
            bucket=config.bucket,
            metrics=metrics,
            staging=staging,
            shown=shown,
            own_attrs=(
                OwnAttrs(client.head_headers, shown, root_prefix=namespace.root_prefix)
                if config.own_attrs
                else None
            ),
        )
        if recovered is not None and recovered.unsent:
            fs.show_unsent(recovered.unsent)
        staged_counts = _staged_counts(staging, store)
        if staged_counts is not None:
            metrics.watch_staged(staged_counts)
        _fuse_init(config, Operations(fs), source)

        def describe() -> str:
            downloads = prefetcher.statistics()
            return describe_mount(
                source,
                str(config.mountpoint),
                downloads["downloads"],
                downloads["gets_in_flight"],
                store.statistics(),
                staged_counts() if staged_counts is not None else None,
            )

        try:
            nursery.start_soon(_handle_signals, namespace, credentials, notifier, prefetcher)
            nursery.start_soon(_announce_ready, config, source, readiness, notifier, describe)
            await pyfuse3.main(min_tasks=4, max_tasks=256)
        except BaseException:
            pyfuse3.close(unmount=True)
            raise
        finally:
            notifier.stopping(f"unmounting {source} from {config.mountpoint}")
            if staging is not None:
                await _finish_writeback(staging)
                await _store_owed(staging)
            with trio.CancelScope(shield=True):
                await saver.save()  # after the drain: its commits stored attributes too
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await prefetcher.aclose()
    pyfuse3.close(unmount=True)
    log.info("unmounted %s from %s cleanly", source, config.mountpoint)


async def _start_metrics(config: MountConfig, metrics: MountMetrics, nursery: trio.Nursery) -> None:
    if config.metrics_addr is None:
        return
    try:
        await nursery.start(serve_metrics, metrics, *config.metrics_addr)
    except OSError as exc:
        host, port = config.metrics_addr
        raise StartupError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}", ExitCode.USAGE
        ) from exc


async def _start_control(
    config: MountConfig, store: CacheStore, prefetcher: Prefetcher, nursery: trio.Nursery
) -> None:
    """`CACHE_DIR/control.sock` for `ossmount cache clear --through-mount`; removed when the
    nursery is cancelled at unmount. Without it the mount still works: a WARNING, no failure."""
    target = StoreControl(store, lambda: prefetcher.statistics()["downloads"], prefetcher.wait_idle)
    try:
        await nursery.start(serve_control, config.cache_dir, target)
    except OSError as exc:
        log.warning(
            "no control socket in %s (ossmount cache clear --through-mount cannot reach this "
            "mount): %s",
            config.cache_dir,
            exc.strerror or exc,
        )


def _prefetcher(
    config: MountConfig,
    client: OssClient,
    store: CacheStore,
    nursery: trio.Nursery,
    metrics: MountMetrics,
) -> Prefetcher:
    return Prefetcher(
        client,
        store,
        nursery,
        PrefetchConfig(
            bucket=config.bucket,
            part_size=config.part_size,
            parallel_count=config.parallel_count,
            max_gets=config.max_gets,
            max_width=min(config.max_parallel_count, config.max_gets),
            readahead_bytes=config.readahead_bytes,
            shed_margin=2 * config.kernel_readahead_kb * 1024,
            warm_limit=config.dir_prefetch,
            warm_max_size=config.part_size,
            spot_block=config.random_read_kb * 1024,
        ),
        metrics,
    )


async def _staging(
    config: MountConfig,
    client: OssClient,
    nursery: trio.Nursery,
    notifier: Notifier,
    shown: ShownAttrs,
) -> tuple[Staging, Recovered]:
    """The write side (-o rw). Files a previous process staged and sealed are committed here,
    before the mount exists, so the mount is never ready with acknowledged bytes missing
    (those whose upload fails here are shown as staged: FileSystem.show_unsent)."""
    settings = UploadSettings(
        part_size=max(config.part_size, 1024 * 1024),
        single_put_max=max(config.part_size, 1024 * 1024),
        parallel=config.parallel_count,
        # Without write-back close waits for the commit, so a small file needs no journal;
        # write-back returns before it, so every file is journaled (fs/staging.py).
        journal_small_puts=config.writeback,
        fsync_staged=config.writeback,  # likewise the staged bytes at close (write/boot.py)
    )
    directory = config.cache_dir / "staging"
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
        ledger = UploadLedger(directory / "uploads.ledger")
    except OSError as exc:
        raise StartupError(f"cache dir {config.cache_dir}: {exc}", ExitCode.CACHE) from exc
    uploader = Uploader(OssWrites(client), ledger, settings)
    staging = Staging(
        uploader,
        directory,
        nursery,
        bucket=config.bucket,
        writeback=config.writeback,
        writeback_delay_s=config.writeback_delay,
        shown=shown,
        attr_delay_s=config.attr_delay,
    )
    try:
        owed_log, owed = OwedLog.resume(owed_path(config.cache_dir, config.bucket))
    except OSError as exc:
        raise StartupError(f"cache dir {config.cache_dir}: {exc}", ExitCode.CACHE) from exc
    versions, later = split_owed(owed)  # set on files sealed then: ride with their upload
    notifier.status(f"committing files staged before the restart in {directory}")
    with notifier.extending(_EXTEND_USEC):
        recovered = await recover_staged(staging.directory, uploader, config.prefix,
                                         {name: h for name, (_, h) in later.items()})  # fmt: skip
    if recovered.done:
        log.info("committed %d file(s) staged before the restart", recovered.done)
    unsent = {files.journal.name for files, _ in recovered.unsent}  # kept: shown with them
    for name in later.keys() - unsent:
        owed_log.paid(STAGED + name)
    await _store_left_owed(staging, owed_log, versions, notifier)
    return staging, recovered


async def _store_left_owed(
    staging: Staging,
    owed_log: OwedLog,
    owed: dict[str, tuple[str, dict[str, str]]],
    notifier: Notifier,
) -> None:
    """Modes, owners and times an earlier mount acknowledged and did not store (killed within
    --attr-delay: write/owedlog.py) are stored before this one is ready, after the files
    staged then (a debt on a version those replaced is refused by its ETag fence, and
    dropped). From here on the log keeps this mount's debts."""
    for key, (etag, headers) in owed.items():
        staging.known.owe(key, etag, headers)  # in the log already
    staging.known.owed_log = owed_log
    if not owed:
        return
    notifier.status(f"storing the modes and times of {len(owed)} object(s) set before the restart")
    with notifier.extending(_EXTEND_USEC):
        await staging.owed.store_all()
    log.info("stored the modes, owners or times of %d object(s) set before the restart",
             len(owed))  # fmt: skip


def _warn_of_staged(cache_dir: Path) -> None:
    """A read-only mount of a cache dir where an earlier --rw mount left files it could not
    upload, or attributes it could not store: they wait, untouched, for the next --rw
    mount; say so, or they wait unnoticed."""
    try:
        waiting = not_on_oss(cache_dir)
    except OSError:
        return
    if waiting["files"] or waiting["attributes"]:
        log.warning("%d file(s) written and the modes, owners or times of %d object(s) set "
                    "through an earlier --rw mount wait in %s, not on OSS yet: a --rw mount "
                    "of this cache dir sends them; this read-only mount shows the objects as "
                    "OSS has them", waiting["files"], waiting["attributes"],
                    cache_dir)  # fmt: skip


def _staged_counts(staging: Staging | None, store: CacheStore) -> Callable[[], StagedCounts] | None:
    """The files being written, counted for metrics and the STATUS line (--rw only)."""
    if staging is None:
        return None
    return lambda: count_staged(staging.by_inode.values(), store.staged_bytes)


async def _finish_writeback(staging: Staging) -> None:
    """At unmount, let write-back uploads finish (bounded: what is left is sealed on disk and
    uploaded by the next mount before it is ready)."""
    if not await _within_drain_time(staging.drain):
        log.warning("unmounting with write-back uploads unfinished after %d s; the next mount "
                    "uploads them", _WRITEBACK_DRAIN_S)  # fmt: skip


async def _store_owed(staging: Staging) -> None:
    """At unmount, store the attributes set moments ago and not sent yet (fs/owedattrs.py),
    bounded like the write-back drain."""
    if not await _within_drain_time(staging.owed.store_all):
        kept = staging.known.owed_log
        log.warning("unmounting with the mode/owner/times of %d file(s) not stored on OSS "
                    "after %d s: the next --rw mount of this cache dir stores them",
                    len(kept) if kept is not None else 0, _WRITEBACK_DRAIN_S)  # fmt: skip


async def _within_drain_time(wait: Callable[[], Awaitable[object]]) -> bool:
    """Run `wait` for up to _WRITEBACK_DRAIN_S, shielded from the unmount's cancel; whether
    it finished."""
    with trio.CancelScope(shield=True), trio.move_on_after(_WRITEBACK_DRAIN_S) as scope:
        await wait()
    return not scope.cancelled_caught


def _fuse_init(config: MountConfig, ops: Operations, source: str) -> None:
    options = {
        f"fsname=ossmount#{source}",
        "subtype=ossmount",
        "rw" if config.rw else "ro",
        "default_permissions",
        "noatime",
    }
    if config.allow_other:
        options.add("allow_other")
    try:
        pyfuse3.init(ops, str(config.mountpoint), options)
    except RuntimeError as exc:
        raise StartupError(
            f"the kernel refused to mount {config.mountpoint}: {exc}", ExitCode.FUSE
        ) from exc


async def _announce_ready(
    config: MountConfig,
    source: str,
    readiness: Readiness,
    notifier: Notifier,
    describe: Callable[[], str],
) -> None:
    # The stat blocks until pyfuse3.main answers the kernel's first requests. In a thread:
    # on the trio thread a stat of the mountpoint waits for itself (see _raise_readahead).
    st = await trio.to_thread.run_sync(os.stat, config.mountpoint)
    _raise_readahead(config.mountpoint, st.st_dev, config.kernel_readahead_kb)
    log.info(
        "mounted %s (%s) at %s, cache %s",
        source,
        config.endpoint,
        config.mountpoint,
        config.cache_dir,
    )
    if config.ignored_options:
        log.info("ignored mount options: %s", ",".join(config.ignored_options))
    readiness.ready()
    notifier.ready(describe())
    await notifier.status_loop(describe)  # rate-limited; the last value wins


async def _reload(namespace: Namespace, credentials: ReloadableCredentials) -> None:
    dropped = namespace.cached_entries
    namespace.invalidate()
    # The kernel's own copies too, or `ls -l` shows the old size until attr_timeout.
    await drop_kernel_caches(namespace.kernel_entries())
    try:
        source = await credentials.reload()
    except CredentialsError as exc:
        log.warning(
            "SIGHUP received: dropped %d cached metadata entries; credentials NOT re-read, "
            "keeping the current ones: %s",
            dropped,
            exc,
        )
        return
    log.info(
        "SIGHUP received: dropped %d cached metadata entries; credentials re-read from %s",
        dropped,
        source,
    )


async def _handle_signals(
    namespace: Namespace,
    credentials: ReloadableCredentials,
    notifier: Notifier,
    prefetcher: Prefetcher,
) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                notifier.reloading()
                await _reload(namespace, credentials)
                notifier.ready()
                continue
            log.info("%s received: unmounting", signal.Signals(signum).name)
            notifier.stopping()
            try:
                pyfuse3.terminate()
            except OSError as exc:  # pragma: no cover - terminate does not usually fail
                if exc.errno != errno.ENOTCONN:
                    raise
            # pyfuse3.main returns only once every request handler has: readers blocked on a
            # slow or stalled part must get their EIO now, not after the part's timeouts.
            prefetcher.abort_all("the filesystem is being unmounted")
            return
