from django import forms
from django.utils.translation import gettext_lazy as _

from .models import NAME_PATTERN


class UploadForm(forms.Form):
    """The fields of the upload page and of `POST /api/builds/` (same names)."""

    tarball = forms.FileField(
        label=_("Build archive"),
        required=False,
        help_text=_("<name>-tree.tar.bz2, -tree.tar.xz or -tree.tar.lzma"),
        widget=forms.ClearableFileInput(attrs={"accept": ".bz2,.xz,.lzma"}),
    )
    # Or the archive sent before in chunks (releases.resumable): the finished upload's id.
    tarball_upload = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)
    md5 = forms.FileField(
        label=_("Checksum file (.md5)"), widget=forms.ClearableFileInput(attrs={"accept": ".md5"})
    )
    contents = forms.FileField(
        label=_("Contents manifest (.contents)"),
        widget=forms.ClearableFileInput(attrs={"accept": ".contents"}),
    )
    name = forms.RegexField(
        label=_("Build name"),
        regex=NAME_PATTERN,
        required=False,
        max_length=64,
        help_text=_("Leave empty to use the archive's prefix, e.g. py801-2."),
        error_messages={
            "invalid": _(
                "Use 1 to 64 letters, digits, dots, dashes or underscores, starting with a "
                "letter or digit."
            )
        },
    )
    contents_hash = forms.CharField(
        label=_("Contents hash"),
        required=False,
        max_length=128,
        help_text=_("Optional: the hash computed on an XO. Needed to promote, not to publish."),
    )

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("tarball") and cleaned.get("tarball_upload"):
            raise forms.ValidationError(
                _("Send the build archive once: as a file or as a finished upload, not both.")
            )
        if not cleaned.get("tarball") and not cleaned.get("tarball_upload"):
            self.add_error("tarball", forms.ValidationError(_("This field is required.")))
        return cleaned


class ContentsHashForm(forms.Form):
    # The service checks the format (and the length) and says exactly what is wrong.
    contents_hash = forms.CharField(
        label=_("Contents hash"),
        max_length=1000,
        error_messages={"required": _("Enter a contents hash.")},
    )


class PromoteForm(forms.Form):
    priority = forms.ChoiceField(label=_("Priority"))
    reason = forms.CharField(
        label=_("Reason"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_(
            "Required when fewer school servers than the minimum are known to have it, or "
            "when the update has privileged changes or is large."
        ),
    )

    def __init__(self, *args, priorities, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["priority"].choices = [(p, p) for p in priorities]


class StopAllForm(forms.Form):
    reason = forms.CharField(
        label=_("Reason"), widget=forms.Textarea(attrs={"rows": 2}), max_length=2000
    )
