"""The demo accounts `make run` seeds (with `seed_demo`) and prints: public passwords, so
`seed_demo` refuses to run with DEBUG off unless forced."""

from . import roles

# username, password, role (None: superuser).
DEMO_USERS = [
    ("uploader", "uploader-demo", roles.UPLOADERS),
    ("approver", "approver-demo", roles.APPROVERS),
    ("coordinator", "coordinator-demo", roles.COORDINATORS),
    ("admin", "admin-demo", None),
]
