"""Code that both services import: the event on the bus and configuration readers."""
