"""The deployment's language wins over the browser's: a Spanish-speaking deployment's staff
often browse with an English browser, and a half-English console misleads. The reader's own
choice (the language menu, kept in a cookie) wins over both; a JSON client may still ask
with Accept-Language (a script has no menu)."""

from django.conf import settings


class DeploymentLanguageMiddleware:
    """Before LocaleMiddleware: hide the browser's Accept-Language from it on every page
    outside the API, so it falls back to LANGUAGE_CODE (PORTAL_DEFAULT_LANGUAGE)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path.startswith(settings.API_PATH_PREFIX):
            request.META.pop("HTTP_ACCEPT_LANGUAGE", None)
        return self.get_response(request)
