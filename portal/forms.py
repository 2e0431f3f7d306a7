from django import forms


class NotificationsForm(forms.Form):
    """One box per kind that may concern the user: checked means e-mail me."""

    def __init__(self, *args, kinds, off, **kwargs):
        super().__init__(*args, **kwargs)
        for kind in kinds:
            self.fields[kind.value] = forms.BooleanField(
                label=kind.label, required=False, initial=kind.value not in off
            )

    def turned_off(self) -> set[str]:
        return {name for name, on in self.cleaned_data.items() if not on}
