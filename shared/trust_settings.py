"""The site's signer and the network's trust list, as the process's settings name them."""

from __future__ import annotations

from shared.settings import Settings
from shared.trust import KEY_FILE_ENV, KEY_ID_ENV, TRUST_LIST_ENV, Signer, TrustList


def site_signer(settings: Settings) -> Signer:
    """The key the site's relays sign with; TrustConfigError names the missing setting."""
    return Signer.from_env(
        settings.site_id,
        {KEY_FILE_ENV: settings.signing_key_file, KEY_ID_ENV: settings.signing_key_id},
    )


def trust_list(settings: Settings) -> TrustList:
    """The trust list every consumer verifies with; TrustConfigError names the setting."""
    return TrustList.from_env({TRUST_LIST_ENV: settings.trust_list_file})
