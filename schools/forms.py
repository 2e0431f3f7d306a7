import hashlib

from django import forms
from django.core import signing
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


# Large enough for every school server of a national deployment (4,000 lines of the export
# are about 600 KiB), small enough to read, show and carry back in the confirm form.
SERVERS_CSV_MAX_BYTES = 2 * 1024 * 1024
# How long a preview may wait for its confirmation.
SERVERS_CSV_PREVIEW_SECONDS = 3600
SERVERS_CSV_SALT = "schools.servers_import"


class ServersImportForm(forms.Form):
    """The CSV file to preview: decoded here, read and compared by the service."""

    file = forms.FileField(
        label=_("CSV file"),
        help_text=_(
            "The columns of the export (hostname and school are required), in UTF-8, at most 2 MiB."
        ),
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > SERVERS_CSV_MAX_BYTES:
            raise forms.ValidationError(_("The file is larger than 2 MiB; import it in parts."))
        data = upload.read()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise forms.ValidationError(
                _(
                    "The file is not UTF-8 text (byte %(position)s cannot be read): a "
                    "spreadsheet file or another encoding? Save it from the spreadsheet as "
                    "“CSV UTF-8”."
                ),
                params={"position": exc.start + 1},
            ) from None
        if not text.strip():
            raise forms.ValidationError(_("The file is empty."))
        self.file_name = upload.name
        return text


class ServersImportConfirmForm(forms.Form):
    """The previewed file itself, carried back signed (so the import is exactly what the
    preview showed, not a new upload), with the fingerprint of the plan it showed."""

    payload = forms.CharField(widget=forms.HiddenInput)

    @staticmethod
    def payload_for(*, text: str, name: str, plan) -> str:
        content = {
            "text": text,
            "name": name,
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
            "plan": plan.fingerprint,
        }
        return signing.dumps(content, salt=SERVERS_CSV_SALT, compress=True)

    def clean_payload(self):
        try:
            content = signing.loads(
                self.cleaned_data["payload"],
                salt=SERVERS_CSV_SALT,
                max_age=SERVERS_CSV_PREVIEW_SECONDS,
            )
        except signing.SignatureExpired:
            raise forms.ValidationError(
                _("This preview is more than an hour old; upload the file again.")
            ) from None
        except signing.BadSignature:
            content = None
        if (
            not isinstance(content, dict)
            or not isinstance(content.get("text"), str)
            or content.get("sha256") != hashlib.sha256(content["text"].encode()).hexdigest()
        ):
            raise forms.ValidationError(
                _(
                    "The file sent with the confirmation is not the one previewed; nothing "
                    "was imported. Upload the file again."
                )
            )
        return content
