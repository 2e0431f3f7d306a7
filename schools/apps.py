from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class SchoolsConfig(AppConfig):
    name = "schools"
    verbose_name = _("School servers")

    def ready(self):
        from portal import metrics as portal_metrics

        from . import metrics

        portal_metrics.register(metrics.collect)
