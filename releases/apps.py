from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ReleasesConfig(AppConfig):
    name = "releases"
    verbose_name = _("Releases")

    def ready(self):
        from portal import metrics as portal_metrics

        from . import metrics

        portal_metrics.register(metrics.collect)
