"""The demo's own events: it tells users when an administrator changes their access.

An example of :func:`live_notifications.events.publish` in a project: each
event is published in the transaction of the change it tells of, to the
users it concerns.
"""
