"""Settings split by purpose: ``base`` (shared), ``production``, ``test``."""
