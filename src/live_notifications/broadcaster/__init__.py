"""The WebSocket server that pushes admin changes to connected users.

Run it with ``python -m live_notifications.broadcaster``. It uses the Django project's settings
and models (``django.setup()``), as in the websockets how-to, but is its own
asyncio program, not served by gunicorn.
"""
