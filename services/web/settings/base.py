"""Settings shared by every environment. Everything comes from the environment.

The variables are listed in docs/reference/environment.md.
"""

from __future__ import annotations

from pathlib import Path

from live_notifications.shared import environment, redisurl

from .database import database_from_url

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = False

ALLOWED_HOSTS = environment.string_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1")
CSRF_TRUSTED_ORIGINS = environment.string_list(
    "DJANGO_CSRF_TRUSTED_ORIGINS", "http://localhost:8000,http://127.0.0.1:8000"
)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "live_notifications",
    "web.notices",
]

MIDDLEWARE = [
    "live_notifications.operations.OperationsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves collected static files from gunicorn, so that the same image works
    # behind any proxy or Kubernetes ingress without a shared volume.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "web.urls"
WSGI_APPLICATION = "web.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": database_from_url(environment.string("DATABASE_URL"))}

REDIS_URL = redisurl.validate(environment.string("REDIS_URL", "redis://localhost:6379/0"))

# django-redis, as in the how-to: the cache, and the connection that publishes
# events. Short timeouts: an admin save must not hang when Redis is away.
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {
            "SOCKET_CONNECT_TIMEOUT": 2,
            "SOCKET_TIMEOUT": 2,
        },
    },
}

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "sesame.backends.ModelBackend",
]

# live_notifications, as its README says; the other settings keep their
# defaults (browsers may connect from CSRF_TRUSTED_ORIGINS). WebSocket tokens
# live 30 s, long enough to load a page and connect; the site has no login
# links, so django-sesame's own lifetime (set, so that tokens carry a date) is
# the same.
LIVE_NOTIFICATIONS_TOKEN_MAX_AGE = environment.integer("SESAME_MAX_AGE", 30, minimum=1)
SESAME_MAX_AGE = LIVE_NOTIFICATIONS_TOKEN_MAX_AGE
#: Address the page connects to; empty means ``ws(s)://<this host>/ws/``.
LIVE_NOTIFICATIONS_WEBSOCKET_URL = environment.string("WEBSOCKET_URL", "")

LOGIN_URL = "admin:login"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(environment.string("DJANGO_STATIC_ROOT", str(BASE_DIR.parent / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOG_LEVEL = environment.string("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}
