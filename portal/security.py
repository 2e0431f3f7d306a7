"""HTTP hardening Django does not ship: a Content-Security-Policy, and the client's address.

The portal's pages load their scripts and styles from /static/ only (no inline <script>, no
style="…" attributes, no on…= handlers, htmx told not to inject its indicator <style>), so the
policy allows neither 'unsafe-inline' nor 'unsafe-eval'.
"""

import ipaddress

from django.conf import settings

CONTENT_SECURITY_POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'"],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "frame-ancestors": ["'none'"],
    "form-action": ["'self'"],
}


def policy_header(policy: dict[str, list[str]]) -> str:
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in policy.items())


class ContentSecurityPolicyMiddleware:
    """Sets the policy on every response that does not carry its own. Non-HTML answers get
    it too: should a browser ever render a CSV or a text file as a page, it still runs no
    script."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.header = policy_header(CONTENT_SECURITY_POLICY)

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", self.header)
        return response


def client_ip(request) -> str | None:
    """The client's address. LOGIN_CLIENT_IP_HEADER is believed only on a request from a
    proxy on this machine (loopback, as in docs/deploy.md): a client reaching gunicorn
    directly cannot pick its own address. None when there is no IP address at all."""
    remote = _ip(request.META.get("REMOTE_ADDR", ""))
    if settings.LOGIN_CLIENT_IP_HEADER and remote is not None and remote.is_loopback:
        # A proxy that appends (X-Forwarded-For) puts the address it saw last.
        forwarded = request.headers.get(settings.LOGIN_CLIENT_IP_HEADER, "").split(",")[-1]
        remote = _ip(forwarded) or remote
    return str(remote) if remote is not None else None


def _ip(text: str):
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None
