from django.db import transaction

from .models import (
    TOKEN_PREFIX_LENGTH,
    ApiToken,
    NotificationKind,
    NotificationOptOut,
    hash_token,
)


def api_token_create(*, user, name: str = "") -> tuple[ApiToken, str]:
    """A new token for `user`; the key is returned once and only its hash is stored."""
    key = ApiToken.new_key()
    token = ApiToken.objects.create(
        user=user, name=name, prefix=key[:TOKEN_PREFIX_LENGTH], key_hash=hash_token(key)
    )
    return token, key


def notification_kinds_set(*, acting_user, user, off) -> None:
    """Turn the kinds in `off` off for `user` and every other kind back on. Only the user
    changes their own (the profile page); preferences are not audited: they change nothing
    anyone else relies on."""
    if acting_user.pk != user.pk:
        raise PermissionError("only the user may change their notifications")
    off = {NotificationKind(kind) for kind in off}
    with transaction.atomic():
        NotificationOptOut.objects.filter(user=user).exclude(kind__in=off).delete()
        have = set(NotificationOptOut.objects.filter(user=user).values_list("kind", flat=True))
        NotificationOptOut.objects.bulk_create(
            NotificationOptOut(user=user, kind=kind) for kind in sorted(off - have)
        )
