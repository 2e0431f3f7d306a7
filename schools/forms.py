from django import forms
from django.utils.translation import gettext_lazy as _

from .checkin import HOSTNAME_RE
from .models import SchoolServer
from .services import EDITABLE_FIELDS


class ServerForm(forms.ModelForm):
    """A school server's own fields, as coordinators add and edit them (`services.server_add`
    and `server_update` save them, audited)."""

    class Meta:
        model = SchoolServer
        fields = EDITABLE_FIELDS
        widgets = {"notes": forms.Textarea(attrs={"rows": 3})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["name"].required = False
        self.fields["name"].help_text = _("Empty: the host name's first label.")

    def clean_hostname(self):
        hostname = SchoolServer.normal_hostname(self.cleaned_data["hostname"])
        if not HOSTNAME_RE.match(hostname):
            raise forms.ValidationError(
                _("“%(value)s” is not a host name: use letters, digits, dots and dashes."),
                params={"value": hostname},
            )
        clash = SchoolServer.objects.filter(hostname=hostname).exclude(pk=self.instance.pk)
        if clash.exists():
            raise forms.ValidationError(_("Another school server has this host name."))
        return hostname

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("name") and cleaned.get("hostname"):
            cleaned["name"] = cleaned["hostname"].split(".")[0]
        return cleaned

    def validate_unique(self):
        pass  # clean_hostname says it in the reader's words
