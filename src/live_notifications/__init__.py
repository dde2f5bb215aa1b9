"""Publishes admin changes to the bus; gives users tokens and the live page."""
