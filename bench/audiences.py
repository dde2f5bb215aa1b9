"""The mixed-audience run: which audience each event has, and who receives it.

Events take turns by sequence number: an admin change (the users who may
view groups), an app event for the group ``bench viewers``, one for the
permission ``auth.view_group``, and one for a single user. The first three
reach the same users, the allowed ones (members of that group, which holds
that permission), each by another index of the broadcaster; the fourth
reaches one allowed user, the next one each time. So every client can tell
what it is due from its rank among the allowed users.
"""

from __future__ import annotations

import collections

#: The audience of event ``seq`` is ``KINDS[seq % 4]``.
KINDS = ("admin", "group", "permission", "user")
USER = KINDS.index("user")
#: The share of the events that every allowed user is due.
SHARED = (len(KINDS) - 1) / len(KINDS)


def recipient_rank(seq: int, allowed: int) -> int | None:
    """The rank, among the ``allowed`` users, of the one user event ``seq`` is
    for; ``None`` for the events all the allowed users receive."""
    if seq % len(KINDS) != USER:
        return None
    return (seq // len(KINDS)) % allowed


def receives(seq: int, rank: int, allowed: int) -> bool:
    """Whether the allowed user of ``rank`` receives event ``seq``."""
    target = recipient_rank(seq, allowed)
    return target is None or target == rank


def due(first: int, end: int, allowed: int) -> tuple[int, collections.Counter[int]]:
    """Of the events ``first`` to ``end - 1``: how many every allowed user is
    due, and how many more each rank is (its user events)."""
    common = 0
    personal: collections.Counter[int] = collections.Counter()
    for seq in range(first, end):
        rank = recipient_rank(seq, allowed)
        if rank is None:
            common += 1
        else:
            personal[rank] += 1
    return common, personal
