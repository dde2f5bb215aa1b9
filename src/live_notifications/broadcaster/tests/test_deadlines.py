"""One timer for many timeouts of one length: none early, none lost, none after a discard."""

from __future__ import annotations

import asyncio

from live_notifications.broadcaster.deadlines import Deadlines

DELAY = 0.05


async def expired_all(deadlines: Deadlines[object]) -> None:
    async with asyncio.timeout(10):  # a key that never expires fails the test
        while len(deadlines):  # noqa: ASYNC110 (its size is what is watched: no event to wait on)
            await asyncio.sleep(DELAY / 10)


def test_keys_expire_in_order_once_due_unless_discarded() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        expired: list[tuple[int, float]] = []
        deadlines: Deadlines[int] = Deadlines(DELAY, lambda key: expired.append((key, loop.time())))
        added = {}
        for key in range(6):
            added[key] = loop.time()
            deadlines.add(key)
            await asyncio.sleep(DELAY / 10)
        deadlines.discard(0)  # the one the timer was set for
        deadlines.discard(3)
        added[4] = loop.time()
        deadlines.add(4)  # set again: its deadline moves, after 5's
        assert 4 in deadlines and 3 not in deadlines and len(deadlines) == 4
        await expired_all(deadlines)
        assert [key for key, _ in expired] == [1, 2, 5, 4]
        for key, when in expired:
            assert when >= added[key] + DELAY, key
        await asyncio.sleep(2 * DELAY)
        assert len(expired) == 4  # nothing twice, nothing discarded

    asyncio.run(main())


def test_a_callback_that_raises_does_not_keep_the_others_from_expiring() -> None:
    async def main() -> None:
        expired: list[str] = []
        errors: list[object] = []
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: errors.append(context)
        )

        def expire(key: str) -> None:
            expired.append(key)
            if key == "first":
                raise RuntimeError("a bug in one callback")

        deadlines: Deadlines[str] = Deadlines(DELAY, expire)
        deadlines.add("first")
        await asyncio.sleep(DELAY / 2)
        deadlines.add("second")
        await expired_all(deadlines)
        assert expired == ["first", "second"]
        assert len(errors) == 1

    asyncio.run(main())


def test_many_keys_keep_one_timer() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        deadlines: Deadlines[int] = Deadlines(60, lambda key: None)
        before = len(loop._scheduled)  # type: ignore[attr-defined]  # asyncio's timer heap
        for key in range(1000):
            deadlines.add(key)
        for key in range(0, 1000, 2):
            deadlines.discard(key)
        assert len(loop._scheduled) == before + 1  # type: ignore[attr-defined]

    asyncio.run(main())
