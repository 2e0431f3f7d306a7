from django.db import models
from django.utils.translation import gettext_lazy as _


class SchoolServerQuerySet(models.QuerySet):
    def active(self):
        return self.filter(active=True)


class SchoolServer(models.Model):
    """One school's server (XS), which rsyncs builds from the mothership every day."""

    name = models.CharField(_("name"), max_length=100)
    hostname = models.CharField(
        _("hostname"),
        max_length=255,
        unique=True,
        help_text=_("What “schoolserver” resolves to inside the school, e.g. xs-caacupe-1.local."),
    )
    school = models.CharField(_("school"), max_length=200)
    department = models.CharField(_("department or region"), max_length=100, blank=True)
    contact = models.CharField(_("contact"), max_length=200, blank=True)
    notes = models.TextField(_("notes"), blank=True)
    active = models.BooleanField(
        _("active"), default=True, help_text=_("Inactive servers do not count for coverage.")
    )

    objects = SchoolServerQuerySet.as_manager()

    class Meta:
        verbose_name = _("school server")
        verbose_name_plural = _("school servers")
        ordering = ["department", "school", "hostname"]

    def __str__(self):
        return self.hostname
