"""The hub's authenticator: NativeAuthenticator's password store (bcrypt hashes in the hub's database,
checked with a lock-out after failed logins), behind the hub's own login page.

NativeAuthenticator 1.3.0's own pages (its login form, sign-up, authorization area) do not work with
JupyterHub 6 (their handlers call the hub's removed `statsd`: every login is a 500), and sign-up is
off here anyway: users are made by an admin (scripts/hub user add). So none of its pages are
registered; the hub's LoginHandler calls its authenticate(). tests/test_hub.py logs in through the
form, so an upgrade that breaks this fails there.
"""

from nativeauthenticator import NativeAuthenticator


class HashedPasswordAuthenticator(NativeAuthenticator):
    def get_handlers(self, app):
        return []
