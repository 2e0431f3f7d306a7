from .models import TOKEN_PREFIX_LENGTH, ApiToken, hash_token


def api_token_create(*, user, name: str = "") -> tuple[ApiToken, str]:
    """A new token for `user`; the key is returned once and only its hash is stored."""
    key = ApiToken.new_key()
    token = ApiToken.objects.create(
        user=user, name=name, prefix=key[:TOKEN_PREFIX_LENGTH], key_hash=hash_token(key)
    )
    return token, key
