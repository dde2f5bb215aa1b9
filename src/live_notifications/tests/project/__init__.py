"""A project with a user model of its own, as adopters have: the package must work with it.

``live_notifications.tests.project.settings`` is the test settings with ``AUTH_USER_MODEL``
swapped for :class:`accounts.models.Person`: email login, a UUID primary
key, tables named otherwise than ``auth_user``; and the notifications app
relabelled ``live``. ``make unit`` runs
``test_project/tests`` with these settings, in a pytest run of its own
(``--ds=live_notifications.tests.project.settings``): a user model is chosen once per process.
"""
