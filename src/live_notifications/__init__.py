"""Publishes admin changes and the project's own events; gives users tokens and the live page."""
