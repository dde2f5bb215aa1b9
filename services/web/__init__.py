"""The Django site: admin, token endpoint, live page; publishes admin changes."""
