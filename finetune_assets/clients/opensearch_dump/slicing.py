"""Read the slices of one dump side by side, one thread each, stopping every slice once one fails."""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from finetune_assets.clients.opensearch_dump.errors import Cancelled
from finetune_assets.clients.opensearch_dump.sampling import SliceSink
from finetune_assets.clients.opensearch_dump.session import DumpSession

SliceReader = Callable[[int, int, SliceSink], None]   # (slice id, slice count, sink): reads one slice into sink


def slices_agree(totals: list[int], expected: int | None) -> bool:
    """Whether per-slice hit totals add up to the whole: a server ignoring ``slice`` answers the whole each time."""
    return sum(totals) == (expected or 0)


def run_slices(session: DumpSession, reader: SliceReader, sinks: list[SliceSink]) -> list[SliceSink]:
    """``reader`` over every slice, slice i into ``sinks[i]``; the first error of any slice is raised here."""
    slices = len(sinks)
    if slices == 1:
        reader(0, 1, sinks[0])
        return sinks
    errors: list[BaseException] = []

    def work(slice_id: int) -> None:
        try:
            reader(slice_id, slices, sinks[slice_id])
        except Cancelled:
            pass
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            with session.lock:
                errors.append(exc)
            session.stop.set()

    with ThreadPoolExecutor(max_workers=slices, thread_name_prefix="index-dump") as pool:
        try:
            list(pool.map(work, range(slices)))
        except BaseException:
            session.stop.set()
            raise
    if errors:
        raise errors[0]
    return sinks
